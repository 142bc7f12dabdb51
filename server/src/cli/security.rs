//! `sluice acl add|list|remove` and `sluice user scram set|list|delete`:
//! ACLs and SCRAM credentials through the Kafka admin APIs
//! (CreateAcls/DescribeAcls/DeleteAcls, AlterUserScramCredentials and
//! DescribeUserScramCredentials), as Kafka's `kafka-acls.sh` and
//! `kafka-configs.sh --alter --add-config SCRAM-...` do.

use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey, CreateAclsRequest, CreateAclsResponse,
    DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest, DescribeAclsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use serde_json::json;
use sluice_metadata::security::{Operation, PatternType, Permission, ResourceType, ScramMechanism};

use super::{Failure, Target, connect_target, refused, s, table};
use crate::handlers::acls::{ANY, Filter};

/// Which resource an ACL command is about.
#[derive(Debug, clap::Args)]
#[group(required = false, multiple = false)]
pub struct Resource {
    /// A topic (or `*`).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group (or `*`).
    #[arg(long)]
    group: Option<String>,
    /// A transactional id (or `*`).
    #[arg(long)]
    transactional_id: Option<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
}

impl Resource {
    fn get(&self) -> Option<(ResourceType, String)> {
        if let Some(t) = &self.topic {
            Some((ResourceType::Topic, t.clone()))
        } else if let Some(g) = &self.group {
            Some((ResourceType::Group, g.clone()))
        } else if let Some(t) = &self.transactional_id {
            Some((ResourceType::TransactionalId, t.clone()))
        } else {
            self.cluster
                .then(|| (ResourceType::Cluster, crate::handlers::CLUSTER_RESOURCE.to_string()))
        }
    }
}

/// An ACL's principal, host, operation and permission.
#[derive(Debug, clap::Args)]
pub struct Entry {
    /// `User:alice` (`User:*` for everyone).
    #[arg(long)]
    principal: Option<String>,
    /// The client's address (`*` for any).
    #[arg(long)]
    host: Option<String>,
    /// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION,
    /// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE or ALL.
    #[arg(long)]
    operation: Option<String>,
    /// Deny instead of allow.
    #[arg(long)]
    deny: bool,
    /// The resource name is a prefix (PREFIXED) instead of a name.
    #[arg(long)]
    prefixed: bool,
}

/// The brokers, the resource and the entry of an ACL command.
#[derive(Debug, clap::Args)]
pub struct AclArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    resource: Resource,
    #[command(flatten)]
    entry: Entry,
}

#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// Adds an ACL (CreateAcls).
    Add(AclArgs),
    /// Lists ACLs (DescribeAcls); each option given narrows the list.
    List(AclArgs),
    /// Removes the ACLs the options match (DeleteAcls).
    Remove(AclArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// SCRAM credentials.
    #[command(subcommand)]
    Scram(ScramCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum ScramCommand {
    /// Sets a user's password for one mechanism; the password is read from
    /// standard input (one line), never from the command line.
    Set {
        #[command(flatten)]
        target: Target,
        user: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = 8192)]
        iterations: i32,
    },
    /// Each user's mechanisms and iteration counts.
    List {
        #[command(flatten)]
        target: Target,
        /// Only these users.
        users: Vec<String>,
    },
    /// Removes a user's credential for one mechanism.
    Delete {
        #[command(flatten)]
        target: Target,
        user: String,
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
    },
}

fn usage(message: String) -> Failure {
    Failure { message, code: 2 }
}

fn operation(entry: &Entry) -> Result<Option<Operation>, Failure> {
    entry
        .operation
        .as_deref()
        .map(|o| Operation::parse(o).ok_or_else(|| usage(format!("unknown operation `{o}`"))))
        .transpose()
}

fn mechanism(name: &str) -> Result<ScramMechanism, Failure> {
    ScramMechanism::ALL
        .into_iter()
        .find(|m| m.name() == name)
        .ok_or_else(|| usage(format!("`{name}`: SCRAM-SHA-256 or SCRAM-SHA-512")))
}

pub(super) fn dispatch(cmd: AclCommand) -> Result<(), Failure> {
    match cmd {
        AclCommand::Add(a) => acl_add(&a.target, &a.resource, &a.entry),
        AclCommand::List(a) => acl_list(&a.target, &a.resource, &a.entry),
        AclCommand::Remove(a) => acl_remove(&a.target, &a.resource, &a.entry),
    }
}

fn acl_add(t: &Target, resource: &Resource, entry: &Entry) -> Result<(), Failure> {
    let (rt, name) = resource
        .get()
        .ok_or_else(|| usage("name a resource: --topic, --group, --transactional-id or --cluster".into()))?;
    let principal = entry
        .principal
        .clone()
        .ok_or_else(|| usage("--principal is required".into()))?;
    let op = operation(entry)?.ok_or_else(|| usage("--operation is required".into()))?;
    let mut c = AclCreation::default();
    c.resource_type = rt.code();
    c.resource_name = s(&name);
    c.resource_pattern_type = if entry.prefixed {
        PatternType::Prefixed
    } else {
        PatternType::Literal
    }
    .code();
    c.principal = s(&principal);
    c.host = s(entry.host.as_deref().unwrap_or("*"));
    c.operation = op.code();
    c.permission_type = if entry.deny {
        Permission::Deny
    } else {
        Permission::Allow
    }
    .code();
    let mut req = CreateAclsRequest::default();
    req.creations = vec![c];
    let mut conn = connect_target(t)?;
    let resp: CreateAclsResponse = conn.call(ApiKey::CreateAcls, 3, &req)?;
    if let Some(r) = resp.results.iter().find(|r| r.error_code != 0) {
        return Err(refused("CreateAcls", r.error_code, r.error_message.as_ref()));
    }
    if !t.json {
        println!("added");
    }
    Ok(())
}

/// The DescribeAcls/DeleteAcls filter of the options (absent: any).
fn filter(resource: &Resource, entry: &Entry) -> Result<Filter, Failure> {
    let (rt, name) = resource.get().map_or((ANY, None), |(rt, n)| (rt.code(), Some(n)));
    Ok(Filter {
        rt,
        name,
        pattern: if entry.prefixed {
            PatternType::Prefixed.code()
        } else {
            ANY
        },
        principal: entry.principal.clone(),
        host: entry.host.clone(),
        op: operation(entry)?.map_or(ANY, Operation::code),
        perm: if entry.deny { Permission::Deny.code() } else { ANY },
    })
}

fn acl_list(t: &Target, resource: &Resource, entry: &Entry) -> Result<(), Failure> {
    let f = filter(resource, entry)?;
    let mut req = DescribeAclsRequest::default();
    req.resource_type_filter = f.rt;
    req.resource_name_filter = f.name.as_deref().map(s);
    req.pattern_type_filter = f.pattern;
    req.principal_filter = f.principal.as_deref().map(s);
    req.host_filter = f.host.as_deref().map(s);
    req.operation = f.op;
    req.permission_type = f.perm;
    let mut conn = connect_target(t)?;
    let resp: DescribeAclsResponse = conn.call(ApiKey::DescribeAcls, 3, &req)?;
    if resp.error_code != 0 {
        return Err(refused("DescribeAcls", resp.error_code, resp.error_message.as_ref()));
    }
    let code = |c: i8, name: fn(i8) -> Option<&'static str>| name(c).unwrap_or("UNKNOWN").to_string();
    let mut rows = Vec::new();
    for r in &resp.resources {
        for a in &r.acls {
            rows.push(vec![
                code(r.resource_type, |c| ResourceType::from_code(c).map(ResourceType::name)),
                r.resource_name.to_string(),
                code(r.pattern_type, |c| PatternType::from_code(c).map(PatternType::name)),
                a.principal.to_string(),
                a.host.to_string(),
                code(a.operation, |c| Operation::from_code(c).map(Operation::name)),
                code(a.permission_type, |c| Permission::from_code(c).map(Permission::name)),
            ]);
        }
    }
    if t.json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"resource_type": r[0], "name": r[1], "pattern": r[2], "principal": r[3],
                       "host": r[4], "operation": r[5], "permission": r[6]})
            })
            .collect();
        println!("{}", serde_json::Value::Array(out));
    } else {
        table(
            &[
                "RESOURCE",
                "NAME",
                "PATTERN",
                "PRINCIPAL",
                "HOST",
                "OPERATION",
                "PERMISSION",
            ],
            &rows,
        );
    }
    Ok(())
}

fn acl_remove(t: &Target, resource: &Resource, entry: &Entry) -> Result<(), Failure> {
    let f = filter(resource, entry)?;
    let mut d = DeleteAclsFilter::default();
    d.resource_type_filter = f.rt;
    d.resource_name_filter = f.name.as_deref().map(s);
    d.pattern_type_filter = if entry.prefixed {
        f.pattern
    } else if f.name.is_some() {
        PatternType::Literal.code()
    } else {
        f.pattern
    };
    d.principal_filter = f.principal.as_deref().map(s);
    d.host_filter = f.host.as_deref().map(s);
    d.operation = f.op;
    d.permission_type = f.perm;
    let mut req = DeleteAclsRequest::default();
    req.filters = vec![d];
    let mut conn = connect_target(t)?;
    let resp: DeleteAclsResponse = conn.call(ApiKey::DeleteAcls, 3, &req)?;
    let r = resp
        .filter_results
        .first()
        .ok_or_else(|| usage("DeleteAcls answered no filter".into()))?;
    if r.error_code != 0 {
        return Err(refused("DeleteAcls", r.error_code, r.error_message.as_ref()));
    }
    if t.json {
        println!("{}", json!({"removed": r.matching_acls.len()}));
    } else {
        println!("removed {}", r.matching_acls.len());
    }
    Ok(())
}

pub(super) fn user_dispatch(cmd: UserCommand) -> Result<(), Failure> {
    match cmd {
        UserCommand::Scram(ScramCommand::Set {
            target,
            user,
            mechanism: m,
            iterations,
        }) => scram_set(&target, &user, mechanism(&m)?, iterations),
        UserCommand::Scram(ScramCommand::List { target, users }) => scram_list(&target, &users),
        UserCommand::Scram(ScramCommand::Delete {
            target,
            user,
            mechanism: m,
        }) => scram_delete(&target, &user, mechanism(&m)?),
    }
}

fn scram_set(t: &Target, user: &str, m: ScramMechanism, iterations: i32) -> Result<(), Failure> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .map_err(|e| usage(format!("reading the password from standard input: {e}")))?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(usage("an empty password (give it on standard input)".into()));
    }
    let salt = crate::security::scram::random_bytes(32);
    let rounds = u32::try_from(iterations).map_err(|_| usage(format!("{iterations} iterations")))?;
    let salted = crate::security::scram::salted_password(m, password.as_bytes(), &salt, rounds);
    let mut u = ScramCredentialUpsertion::default();
    u.name = s(user);
    u.mechanism = m.id();
    u.iterations = iterations;
    u.salt = salt.into();
    u.salted_password = salted.into();
    let mut req = AlterUserScramCredentialsRequest::default();
    req.upsertions = vec![u];
    alter_scram(t, &req)
}

fn scram_delete(t: &Target, user: &str, m: ScramMechanism) -> Result<(), Failure> {
    let mut d = ScramCredentialDeletion::default();
    d.name = s(user);
    d.mechanism = m.id();
    let mut req = AlterUserScramCredentialsRequest::default();
    req.deletions = vec![d];
    alter_scram(t, &req)
}

fn alter_scram(t: &Target, req: &AlterUserScramCredentialsRequest) -> Result<(), Failure> {
    let mut conn = connect_target(t)?;
    let resp: AlterUserScramCredentialsResponse = conn.call(ApiKey::AlterUserScramCredentials, 0, req)?;
    if let Some(r) = resp.results.iter().find(|r| r.error_code != 0) {
        return Err(refused(
            "AlterUserScramCredentials",
            r.error_code,
            r.error_message.as_ref(),
        ));
    }
    if !t.json {
        println!("done");
    }
    Ok(())
}

fn scram_list(t: &Target, users: &[String]) -> Result<(), Failure> {
    let mut req = DescribeUserScramCredentialsRequest::default();
    req.users = (!users.is_empty()).then(|| {
        users
            .iter()
            .map(|u| {
                let mut n = UserName::default();
                n.name = s(u);
                n
            })
            .collect()
    });
    let mut conn = connect_target(t)?;
    let resp: DescribeUserScramCredentialsResponse = conn.call(ApiKey::DescribeUserScramCredentials, 0, &req)?;
    if resp.error_code != 0 {
        return Err(refused(
            "DescribeUserScramCredentials",
            resp.error_code,
            resp.error_message.as_ref(),
        ));
    }
    let mut rows = Vec::new();
    for r in &resp.results {
        if r.error_code != 0 {
            return Err(refused(
                &format!("DescribeUserScramCredentials {}", r.user.as_str()),
                r.error_code,
                r.error_message.as_ref(),
            ));
        }
        for c in &r.credential_infos {
            let m = ScramMechanism::from_id(c.mechanism).map_or("UNKNOWN", ScramMechanism::name);
            rows.push(vec![r.user.to_string(), m.to_string(), c.iterations.to_string()]);
        }
    }
    if t.json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| json!({"user": r[0], "mechanism": r[1], "iterations": r[2].parse::<i64>().unwrap_or(0)}))
            .collect();
        println!("{}", serde_json::Value::Array(out));
    } else {
        table(&["USER", "MECHANISM", "ITERATIONS"], &rows);
    }
    Ok(())
}
