//! The security part of the metadata image: SCRAM credentials. They
//! change only through metadata records, so every broker of the cluster
//! authenticates against the same credentials.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A SCRAM mechanism, with Kafka's type id (`ScramMechanism`): 1 is
/// SCRAM-SHA-256, 2 is SCRAM-SHA-512.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [Self; 2] = [Self::Sha256, Self::Sha512];

    pub fn id(self) -> i8 {
        match self {
            Self::Sha256 => 1,
            Self::Sha512 => 2,
        }
    }

    pub fn from_id(id: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Kafka's bounds on the iteration count of a stored credential.
    pub const MIN_ITERATIONS: i32 = 4096;
    pub const MAX_ITERATIONS: i32 = 16384;
}

/// What the broker keeps of a SCRAM password (RFC 5802): the salt, the
/// iteration count and two keys derived from the salted password; the
/// password itself cannot be recovered from them. `Debug` shows none of
/// the bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The security state of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityImage {
    /// SCRAM credentials by user and mechanism.
    pub scram: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
}

impl SecurityImage {
    pub fn scram(&self, user: &str, mechanism: ScramMechanism) -> Option<&ScramCredential> {
        self.scram.get(user).and_then(|m| m.get(&mechanism))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_and_hide_their_bytes() {
        let mut image = SecurityImage::default();
        image.scram.entry("alice".into()).or_default().insert(
            ScramMechanism::Sha512,
            ScramCredential {
                salt: vec![1, 2],
                stored_key: vec![3],
                server_key: vec![4],
                iterations: 4096,
            },
        );
        let json = serde_json::to_string(&image).unwrap_or_default();
        assert!(json.contains("SCRAM-SHA-512"), "{json}");
        let back: SecurityImage = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, image);
        let shown = format!("{image:?}");
        assert!(!shown.contains("salt") && !shown.contains("stored_key"), "{shown}");
        assert!(image.scram("alice", ScramMechanism::Sha512).is_some());
        assert!(image.scram("alice", ScramMechanism::Sha256).is_none());
    }
}
