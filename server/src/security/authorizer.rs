//! The authorizer: Kafka's StandardAuthorizer rules over the ACLs of the
//! metadata image.
//!
//! - Off unless `authorizer.class.name` is set: everything is allowed.
//! - `super.users` may do anything.
//! - A DENY that matches (principal or `User:*`, host or `*`, the
//!   operation or ALL) wins over every ALLOW.
//! - An ALLOW of the operation, of ALL, or of an operation that implies it
//!   (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
//!   DESCRIBE_CONFIGS) allows.
//! - A resource no ACL covers at all is allowed only with
//!   `allow.everyone.if.no.acl.found`.
//!
//! An ACL covers a resource when its type matches and its name is the
//! resource's (LITERAL), `*` (LITERAL), or a prefix of it (PREFIXED).

use sluice_metadata::security::{Acl, Operation, Permission, ResourceType, SecurityImage};

use crate::config::security::AuthorizerConfig;

/// The cluster's name as a resource (Kafka's).
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";

/// Whether an ACL granting `granted` allows `wanted`.
pub fn implies(granted: Operation, wanted: Operation) -> bool {
    granted == wanted
        || granted == Operation::All
        || (wanted == Operation::Describe
            && matches!(
                granted,
                Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
            ))
        || (wanted == Operation::DescribeConfigs && granted == Operation::AlterConfigs)
}

/// Who asks, from where.
#[derive(Debug, Clone)]
pub struct Requester {
    /// `User:name`.
    pub principal: String,
    /// The client's address (`127.0.0.1`).
    pub host: String,
    /// Allowed everything: a super user, or the authorizer is off.
    pub unrestricted: bool,
}

impl Requester {
    pub fn new(config: &AuthorizerConfig, principal: String, host: String) -> Self {
        let unrestricted = !config.enabled || config.super_users.contains(&principal);
        Self {
            principal,
            host,
            unrestricted,
        }
    }

    fn applies(&self, acl: &Acl) -> bool {
        (acl.principal == self.principal || acl.principal == "User:*") && (acl.host == self.host || acl.host == "*")
    }

    /// Whether the requester may do `op` on resource `name` of type
    /// `resource_type`.
    pub fn allows(
        &self,
        acls: &SecurityImage,
        config: &AuthorizerConfig,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.unrestricted {
            return true;
        }
        let mut covered = false;
        let mut allowed = false;
        for acl in acls.acls.iter().filter(|a| a.covers(resource_type, name)) {
            covered = true;
            if !self.applies(acl) {
                continue;
            }
            match acl.permission {
                Permission::Deny if acl.operation == op || acl.operation == Operation::All => return false,
                Permission::Deny => {}
                Permission::Allow => allowed |= implies(acl.operation, op),
            }
        }
        allowed || (!covered && config.allow_if_no_acl)
    }

    /// Whether some resource of `resource_type` allows `op` (Kafka's
    /// check by resource type, which lets an idempotent producer with
    /// WRITE on any topic in without IDEMPOTENT_WRITE on the cluster): an
    /// ALLOW that applies, unless a DENY of the same operation covers every
    /// resource of the type.
    pub fn allows_some(&self, acls: &SecurityImage, op: Operation, resource_type: ResourceType) -> bool {
        if self.unrestricted {
            return true;
        }
        let applying = || {
            acls.acls
                .iter()
                .filter(move |a| a.resource_type == resource_type && self.applies(a))
        };
        let denied_everywhere = applying().any(|a| {
            a.permission == Permission::Deny
                && (a.operation == op || a.operation == Operation::All)
                && a.pattern == sluice_metadata::security::PatternType::Literal
                && a.resource_name == sluice_metadata::security::WILDCARD
        });
        !denied_everywhere && applying().any(|a| a.permission == Permission::Allow && implies(a.operation, op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::security::PatternType;

    fn acl(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        perm: Permission,
    ) -> Acl {
        Acl {
            resource_type: rt,
            resource_name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn on() -> AuthorizerConfig {
        AuthorizerConfig {
            enabled: true,
            super_users: vec!["User:admin".into()],
            allow_if_no_acl: false,
        }
    }

    fn who(config: &AuthorizerConfig, principal: &str) -> Requester {
        Requester::new(config, principal.into(), "127.0.0.1".into())
    }

    #[test]
    fn standard_authorizer_rules() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let c = on();
        let mut image = SecurityImage::default();
        image
            .acls
            .insert(acl(Topic, "orders", Literal, "User:alice", Read, Allow));
        image
            .acls
            .insert(acl(Topic, "pay-", Prefixed, "User:alice", Write, Allow));
        image
            .acls
            .insert(acl(Topic, "pay-secret", Literal, "User:alice", All, Deny));
        image.acls.insert(acl(Topic, "*", Literal, "User:*", Describe, Allow));
        image.acls.insert(acl(Group, "g", Literal, "User:bob", Read, Allow));
        let alice = who(&c, "User:alice");
        let bob = who(&c, "User:bob");
        let allows = |r: &Requester, op, rt, name| r.allows(&image, &c, op, rt, name);
        assert!(allows(&alice, Read, Topic, "orders"));
        assert!(allows(&alice, Describe, Topic, "orders"), "READ implies DESCRIBE");
        assert!(!allows(&alice, Write, Topic, "orders"));
        assert!(allows(&alice, Write, Topic, "pay-in"), "prefixed");
        assert!(
            !allows(&alice, Write, Topic, "pay-secret"),
            "deny wins over a prefixed allow"
        );
        assert!(
            !allows(&alice, Describe, Topic, "pay-secret"),
            "deny ALL wins over a wildcard allow"
        );
        assert!(
            allows(&bob, Describe, Topic, "anything"),
            "the wildcard topic and principal"
        );
        assert!(!allows(&bob, Read, Topic, "orders"));
        assert!(allows(&bob, Read, Group, "g"));
        assert!(!allows(&alice, Read, Group, "g"));
        // No ACL covers the cluster: denied unless allow.everyone.if.no.acl.found.
        assert!(!allows(&alice, Describe, Cluster, "kafka-cluster"));
        let lenient = AuthorizerConfig {
            allow_if_no_acl: true,
            ..on()
        };
        assert!(who(&lenient, "User:alice").allows(&image, &lenient, Describe, Cluster, "kafka-cluster"));
        assert!(
            !who(&lenient, "User:bob").allows(&image, &lenient, Read, Topic, "orders"),
            "a covered resource is not open"
        );
        // Super users and a switched-off authorizer allow everything.
        assert!(allows(&who(&c, "User:admin"), Alter, Cluster, "kafka-cluster"));
        let off = AuthorizerConfig::default();
        assert!(who(&off, "User:nobody").allows(&image, &off, Write, Topic, "pay-secret"));
        // By resource type: alice may write some topic, bob none.
        assert!(alice.allows_some(&image, Write, Topic));
        assert!(!bob.allows_some(&image, Write, Topic));
        // Hosts.
        let mut hosts = SecurityImage::default();
        let mut a = acl(Topic, "t", Literal, "User:carol", Read, Allow);
        a.host = "10.0.0.1".into();
        hosts.acls.insert(a);
        assert!(!who(&c, "User:carol").allows(&hosts, &c, Read, Topic, "t"));
        let from = Requester::new(&c, "User:carol".into(), "10.0.0.1".into());
        assert!(from.allows(&hosts, &c, Read, Topic, "t"));
    }
}
