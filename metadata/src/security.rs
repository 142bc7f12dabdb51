//! The security part of the metadata image: SCRAM credentials and ACLs.
//! They change only through metadata records, so every broker of the
//! cluster authenticates and authorizes against the same ones.

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

/// Defines a Kafka enum by its wire codes.
macro_rules! kafka_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:expr, $text:expr;)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// Kafka's code on the wire.
            pub fn code(self) -> i8 {
                match self {
                    $(Self::$variant => $code,)+
                }
            }

            pub fn from_code(code: i8) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.code() == code)
            }

            /// Kafka's name (as its tools print it).
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                let s = s.trim().replace(['-', ' '], "_");
                Self::ALL.iter().copied().find(|v| v.name().eq_ignore_ascii_case(&s))
            }
        }
    };
}

kafka_enum!(
    /// What an ACL is about (Kafka's `ResourceType`; ANY is a filter only).
    ResourceType {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
);

kafka_enum!(
    /// How an ACL's resource name matches (Kafka's `PatternType`; ANY and
    /// MATCH are filters only).
    PatternType {
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// Kafka's `AclOperation` (ANY is a filter only).
    Operation {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
);

kafka_enum!(
    /// Kafka's `AclPermissionType` (ANY is a filter only).
    Permission {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

/// The wildcard resource name of a literal ACL: every resource of its type.
pub const WILDCARD: &str = "*";

/// One ACL, as Kafka's `AclBinding`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Acl {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern: PatternType,
    /// `User:alice`, or `User:*` for every principal.
    pub principal: String,
    /// The client's address, or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl Acl {
    /// Whether this ACL's resource pattern covers resource `name` of type
    /// `resource_type`.
    pub fn covers(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern {
                PatternType::Literal => self.resource_name == name || self.resource_name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }
}

/// The security state of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityImage {
    /// SCRAM credentials by user and mechanism.
    pub scram: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
    /// Every ACL.
    #[serde(default)]
    pub acls: std::collections::BTreeSet<Acl>,
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
