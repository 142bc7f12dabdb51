//! CreateAcls, DescribeAcls and DeleteAcls (v1–3): ACLs as metadata
//! records, with Kafka's filters and refusals. Without an authorizer
//! (`authorizer.class.name`) they answer SECURITY_DISABLED, as Kafka.

use bytes::BytesMut;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::security::{Acl, Operation, PatternType, Permission, ResourceType, SecurityImage, WILDCARD};

use super::{CLUSTER_RESOURCE, Ctx, Outcome, str_bytes};
use crate::controller::ControllerRequest;
use crate::error_codes::ErrorCode;

/// Kafka's ANY (1) of each ACL enum, and MATCH (2) of pattern types.
pub const ANY: i8 = 1;
pub const MATCH: i8 = 2;

/// An ACL of a CreateAcls entry, checked as Kafka checks it.
fn binding(rt: i8, name: &str, pattern: i8, principal: &str, host: &str, op: i8, perm: i8) -> Result<Acl, String> {
    let resource_type = ResourceType::from_code(rt).ok_or(format!("unknown resource type {rt}"))?;
    let pattern =
        PatternType::from_code(pattern).ok_or(format!("pattern type {pattern} is not LITERAL or PREFIXED"))?;
    let operation = Operation::from_code(op).ok_or(format!("unknown or ANY operation {op}"))?;
    let permission = Permission::from_code(perm).ok_or(format!("permission type {perm} is not ALLOW or DENY"))?;
    let Some((kind, who)) = principal.split_once(':') else {
        return Err(format!("principal `{principal}` is not TYPE:NAME"));
    };
    if kind.is_empty() || who.is_empty() {
        return Err(format!("principal `{principal}` is not TYPE:NAME"));
    }
    if name.is_empty() {
        return Err("the resource name is empty".into());
    }
    if resource_type == ResourceType::Cluster && name != CLUSTER_RESOURCE {
        return Err(format!("the cluster resource is named `{CLUSTER_RESOURCE}`"));
    }
    if pattern == PatternType::Prefixed && name == WILDCARD {
        return Err("a PREFIXED pattern cannot be `*`".into());
    }
    if host.is_empty() {
        return Err("the host is empty (`*` for any)".into());
    }
    Ok(Acl {
        resource_type,
        resource_name: name.to_string(),
        pattern,
        principal: principal.to_string(),
        host: host.to_string(),
        operation,
        permission,
    })
}

/// A DescribeAcls or DeleteAcls filter, with Kafka's codes (1 is ANY; 2,
/// of pattern types, MATCH); `None` matches any.
#[derive(Debug)]
pub struct Filter {
    pub rt: i8,
    pub name: Option<String>,
    pub pattern: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub op: i8,
    pub perm: i8,
}

impl Filter {
    fn matches(&self, acl: &Acl) -> bool {
        let field = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        let code = |want: i8, got: i8| want == ANY || want == got;
        let resource = match (self.pattern, &self.name) {
            // MATCH: the ACLs that apply to the named resource.
            (MATCH, Some(name)) => acl.covers(acl.resource_type, name),
            (MATCH | ANY, None) => true,
            (ANY, Some(name)) => acl.resource_name == *name,
            (p, name) => p == acl.pattern.code() && field(name, &acl.resource_name),
        };
        code(self.rt, acl.resource_type.code())
            && resource
            && field(&self.principal, &acl.principal)
            && field(&self.host, &acl.host)
            && code(self.op, acl.operation.code())
            && code(self.perm, acl.permission.code())
    }

    /// Whether the filter's codes are ones Kafka accepts.
    fn valid(&self) -> Result<(), String> {
        if self.rt != ANY && ResourceType::from_code(self.rt).is_none() {
            return Err(format!("unknown resource type {}", self.rt));
        }
        if !matches!(self.pattern, ANY | MATCH) && PatternType::from_code(self.pattern).is_none() {
            return Err(format!("unknown pattern type {}", self.pattern));
        }
        if self.op != ANY && Operation::from_code(self.op).is_none() {
            return Err(format!("unknown operation {}", self.op));
        }
        if self.perm != ANY && Permission::from_code(self.perm).is_none() {
            return Err(format!("unknown permission type {}", self.perm));
        }
        Ok(())
    }

    fn select<'a>(&'a self, image: &'a SecurityImage) -> impl Iterator<Item = &'a Acl> + 'a {
        image.acls.iter().filter(move |a| self.matches(a))
    }
}

fn s(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|s| s.to_string())
}

/// The filter of a DescribeAcls request or a DeleteAcls entry (the same
/// fields in two message types).
macro_rules! filter_of {
    ($m:expr) => {
        Filter {
            rt: $m.resource_type_filter,
            name: s(&$m.resource_name_filter),
            pattern: $m.pattern_type_filter,
            principal: s(&$m.principal_filter),
            host: s(&$m.host_filter),
            op: $m.operation,
            perm: $m.permission_type,
        }
    };
}

/// SECURITY_DISABLED without an authorizer, CLUSTER_AUTHORIZATION_FAILED
/// without `op` on the cluster.
fn refused(ctx: &Ctx, op: Operation) -> Option<(ErrorCode, &'static str)> {
    if !ctx.shard.config().security.authorizer.enabled {
        return Some((
            ErrorCode::SecurityDisabled,
            "No Authorizer is configured (authorizer.class.name)",
        ));
    }
    (!ctx.access().cluster(op)).then_some((ErrorCode::ClusterAuthorizationFailed, "Cluster authorization failed"))
}

pub async fn create_acls(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: CreateAclsRequest = decode_or_return!(ctx, body);
    let mut resp = CreateAclsResponse::default();
    let refusal = refused(&ctx, Operation::Alter);
    let mut asks = Vec::new();
    let mut slots = Vec::new();
    for c in &req.creations {
        let mut r = AclCreationResult::default();
        if let Some((code, msg)) = refusal {
            r.error_code = code.code();
            r.error_message = Some(str_bytes(msg));
        } else {
            match binding(
                c.resource_type,
                c.resource_name.as_str(),
                c.resource_pattern_type,
                c.principal.as_str(),
                c.host.as_str(),
                c.operation,
                c.permission_type,
            ) {
                Ok(acl) => {
                    slots.push(resp.results.len());
                    asks.push(Ok(ControllerRequest::CreateAcls(vec![acl])));
                }
                Err(why) => {
                    r.error_code = ErrorCode::InvalidRequest.code();
                    r.error_message = Some(str_bytes(&why));
                }
            }
        }
        resp.results.push(r);
    }
    if !asks.is_empty() {
        let answers = crate::controller::ask(&ctx.shard, asks).await;
        for (slot, answer) in slots.into_iter().zip(answers) {
            if let Err(e) = answer {
                resp.results[slot].error_code = e.code.code();
                resp.results[slot].error_message = Some(str_bytes(&e.message));
            }
        }
    }
    ctx.respond(&resp)
}

fn description(acl: &Acl) -> AclDescription {
    let mut d = AclDescription::default();
    d.principal = str_bytes(&acl.principal);
    d.host = str_bytes(&acl.host);
    d.operation = acl.operation.code();
    d.permission_type = acl.permission.code();
    d
}

pub fn describe_acls(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DescribeAclsRequest = decode_or_return!(ctx, body);
    let mut resp = DescribeAclsResponse::default();
    if let Some((code, msg)) = refused(&ctx, Operation::Describe) {
        resp.error_code = code.code();
        resp.error_message = Some(str_bytes(msg));
        return ctx.respond(&resp);
    }
    let filter = filter_of!(req);
    if let Err(why) = filter.valid() {
        resp.error_code = ErrorCode::InvalidRequest.code();
        resp.error_message = Some(str_bytes(&why));
        return ctx.respond(&resp);
    }
    let snapshot = ctx.shard.meta();
    for acl in filter.select(&snapshot.security) {
        // ACLs are sorted by resource, so one resource's come together.
        let same = resp.resources.last().is_some_and(|r: &DescribeAclsResource| {
            r.resource_type == acl.resource_type.code()
                && r.resource_name.as_str() == acl.resource_name
                && r.pattern_type == acl.pattern.code()
        });
        if !same {
            let mut r = DescribeAclsResource::default();
            r.resource_type = acl.resource_type.code();
            r.resource_name = str_bytes(&acl.resource_name);
            r.pattern_type = acl.pattern.code();
            resp.resources.push(r);
        }
        if let Some(r) = resp.resources.last_mut() {
            r.acls.push(description(acl));
        }
    }
    ctx.respond(&resp)
}

pub async fn delete_acls(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DeleteAclsRequest = decode_or_return!(ctx, body);
    let mut resp = DeleteAclsResponse::default();
    let refusal = refused(&ctx, Operation::Alter);
    let snapshot = ctx.shard.meta();
    let mut removed = std::collections::BTreeSet::new();
    for f in &req.filters {
        let mut r = DeleteAclsFilterResult::default();
        if let Some((code, msg)) = refusal {
            r.error_code = code.code();
            r.error_message = Some(str_bytes(msg));
            resp.filter_results.push(r);
            continue;
        }
        let filter = filter_of!(f);
        if let Err(why) = filter.valid() {
            r.error_code = ErrorCode::InvalidRequest.code();
            r.error_message = Some(str_bytes(&why));
            resp.filter_results.push(r);
            continue;
        }
        for acl in filter.select(&snapshot.security) {
            let mut m = DeleteAclsMatchingAcl::default();
            m.resource_type = acl.resource_type.code();
            m.resource_name = str_bytes(&acl.resource_name);
            m.pattern_type = acl.pattern.code();
            m.principal = str_bytes(&acl.principal);
            m.host = str_bytes(&acl.host);
            m.operation = acl.operation.code();
            m.permission_type = acl.permission.code();
            r.matching_acls.push(m);
            removed.insert(acl.clone());
        }
        resp.filter_results.push(r);
    }
    if !removed.is_empty() {
        let answer = crate::controller::ask(
            &ctx.shard,
            vec![Ok(ControllerRequest::DeleteAcls(removed.into_iter().collect()))],
        )
        .await;
        if let Some(Err(e)) = answer.into_iter().next() {
            // All or none: every filter that matched reports the failure.
            for r in resp.filter_results.iter_mut().filter(|r| !r.matching_acls.is_empty()) {
                r.error_code = e.code.code();
                r.error_message = Some(str_bytes(&e.message));
                r.matching_acls.clear();
            }
        }
    }
    ctx.respond(&resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(name: &str, pattern: PatternType, principal: &str) -> Acl {
        Acl {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn filters_as_kafka_reads_them() {
        let mut image = SecurityImage::default();
        for a in [
            acl("orders", PatternType::Literal, "User:a"),
            acl("ord", PatternType::Prefixed, "User:b"),
            acl("*", PatternType::Literal, "User:c"),
            acl("other", PatternType::Literal, "User:a"),
        ] {
            image.acls.insert(a);
        }
        let f = |name: Option<&str>, pattern: i8, principal: Option<&str>| Filter {
            rt: ANY,
            name: name.map(str::to_string),
            pattern,
            principal: principal.map(str::to_string),
            host: None,
            op: ANY,
            perm: ANY,
        };
        let names = |filter: Filter| -> Vec<String> {
            filter
                .select(&image)
                .map(|a| format!("{}:{}", a.pattern.name(), a.resource_name))
                .collect()
        };
        assert_eq!(names(f(None, ANY, None)).len(), 4);
        assert_eq!(
            names(f(Some("orders"), MATCH, None)),
            ["LITERAL:*", "PREFIXED:ord", "LITERAL:orders"]
        );
        assert_eq!(names(f(Some("orders"), ANY, None)), ["LITERAL:orders"]);
        assert_eq!(
            names(f(Some("ord"), PatternType::Prefixed.code(), None)),
            ["PREFIXED:ord"]
        );
        assert_eq!(names(f(None, ANY, Some("User:a"))), ["LITERAL:orders", "LITERAL:other"]);
        assert!(f(None, 9, None).valid().is_err());
    }

    #[test]
    fn creations_are_checked() {
        let ok = |rt, name: &str, p, who: &str, host: &str, op, perm| binding(rt, name, p, who, host, op, perm).is_ok();
        assert!(ok(2, "t", 3, "User:a", "*", 3, 3));
        assert!(!ok(1, "t", 3, "User:a", "*", 3, 3), "ANY resource type");
        assert!(!ok(2, "t", 2, "User:a", "*", 3, 3), "MATCH pattern");
        assert!(!ok(2, "t", 3, "alice", "*", 3, 3), "principal without a type");
        assert!(!ok(2, "t", 3, "User:a", "*", 1, 3), "ANY operation");
        assert!(!ok(2, "t", 3, "User:a", "*", 3, 1), "ANY permission");
        assert!(!ok(4, "c", 3, "User:a", "*", 3, 3), "the cluster is kafka-cluster");
        assert!(ok(4, "kafka-cluster", 3, "User:a", "*", 9, 3));
        assert!(!ok(2, "*", 4, "User:a", "*", 3, 3), "prefixed wildcard");
    }
}
