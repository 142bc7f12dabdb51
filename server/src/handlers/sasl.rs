//! SaslHandshake and SaslAuthenticate (and the raw tokens that follow a
//! v0 handshake), AlterUserScramCredentials and
//! DescribeUserScramCredentials.
//!
//! A connection's SASL session lives in its [`super::Conn`]; the read
//! loop (`net`) serves a SASL listener's requests one at a time until the
//! session is authenticated, so these handlers see its tokens in order.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use sluice_metadata::security::ScramMechanism;

use super::{Conn, Ctx, Outcome, str_bytes};
use crate::controller::ControllerRequest;
use crate::error_codes::ErrorCode;
use crate::node::Shard;
use crate::protocol::{Part, Response};
use crate::security::sasl::{Context, HandshakeError, Step};

pub fn sasl_handshake(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: SaslHandshakeRequest = decode_or_return!(ctx, body);
    let enabled = &ctx.shard.config().security.sasl_mechanisms;
    let mut resp = SaslHandshakeResponse::default();
    resp.mechanisms = enabled.iter().map(|m| str_bytes(m.name())).collect();
    if !ctx.conn.protocol.sasl() {
        // As Kafka: no SASL on this listener.
        resp.error_code = ErrorCode::IllegalSaslState.code();
        return ctx.respond(&resp);
    }
    let result = ctx
        .conn
        .sasl
        .borrow_mut()
        .handshake(req.mechanism.as_str(), enabled, ctx.version);
    match result {
        Ok(_) => ctx.respond(&resp),
        Err(e) => {
            resp.error_code = match e {
                HandshakeError::Unsupported => ErrorCode::UnsupportedSaslMechanism,
                HandshakeError::IllegalState => ErrorCode::IllegalSaslState,
            }
            .code();
            then_close(
                ctx.respond(&resp),
                format!("SASL handshake for `{}` refused", req.mechanism.as_str()),
            )
        }
    }
}

/// An answer after which the connection closes.
fn then_close(outcome: Outcome, reason: String) -> Outcome {
    match outcome {
        Outcome::Respond(r) => Outcome::RespondThenClose(r, reason),
        other => other,
    }
}

/// Runs one token through the connection's session.
fn step(shard: &Shard, conn: &Conn, token: &[u8]) -> Step {
    let snapshot = shard.meta();
    let config = &shard.config().security;
    let c = Context {
        config,
        listener: &conn.listener,
        security: &snapshot.security,
    };
    conn.sasl.borrow_mut().token(token, c)
}

/// Holds a refusal for `connection.failed.authentication.delay.ms`.
async fn delay_failure(shard: &Shard, conn: &Conn, user: Option<&str>, why: &str) {
    tracing::info!(peer = %conn.peer, listener = %conn.listener, user, reason = why, "authentication failed");
    crate::base::counters::ShardMetrics::bump(&shard.metrics.authentication_failures);
    let ms = shard.config().security.failed_authentication_delay_ms;
    if ms > 0 {
        compio::runtime::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

pub async fn sasl_authenticate(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: SaslAuthenticateRequest = decode_or_return!(ctx, body);
    let mut resp = SaslAuthenticateResponse::default();
    if !ctx.conn.protocol.sasl() || !ctx.conn.sasl.borrow().exchanging() {
        resp.error_code = ErrorCode::IllegalSaslState.code();
        resp.error_message = Some(str_bytes("SaslAuthenticate without a SaslHandshake before it"));
        return then_close(ctx.respond(&resp), "SaslAuthenticate out of turn".into());
    }
    match step(&ctx.shard, &ctx.conn, &req.auth_bytes) {
        Step::Challenge(b) => {
            resp.auth_bytes = Bytes::from(b);
            ctx.respond(&resp)
        }
        Step::Success(b) => {
            resp.auth_bytes = Bytes::from(b);
            if ctx.version >= 1 {
                // How long the session lasts (0: for ever).
                resp.session_lifetime_ms = ctx.shard.config().security.max_reauth_ms;
            }
            crate::base::counters::ShardMetrics::bump(&ctx.shard.metrics.authentications);
            tracing::debug!(peer = %ctx.conn.peer, listener = %ctx.conn.listener, principal = %ctx.conn.principal(), "SASL authenticated");
            ctx.respond(&resp)
        }
        Step::Failure(why) => {
            let user = ctx.conn.sasl.borrow().user().map(str::to_string);
            delay_failure(&ctx.shard, &ctx.conn, user.as_deref(), &why).await;
            resp.error_code = ErrorCode::SaslAuthenticationFailed.code();
            resp.error_message = Some(str_bytes(&why));
            then_close(ctx.respond(&resp), "SASL authentication failed".into())
        }
    }
}

/// A raw token after a v0 handshake: the frame holds the token alone,
/// and the answer is the next token, length-prefixed, with no Kafka
/// header. A failure closes the connection without an answer.
pub async fn raw_token(shard: &Shard, conn: &Conn, token: BytesMut) -> Outcome {
    match step(shard, conn, &token) {
        Step::Challenge(b) | Step::Success(b) => {
            let mut out = BytesMut::with_capacity(4 + b.len());
            out.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
            out.extend_from_slice(&b);
            Outcome::Respond(Response {
                parts: vec![Part::Mem(out.freeze())],
            })
        }
        Step::Failure(why) => {
            delay_failure(shard, conn, None, &why).await;
            Outcome::Close(format!("SASL authentication failed: {why}"))
        }
    }
}

/// One user's part of an AlterUserScramCredentials: its first refusal,
/// its changes, and how many entries name it.
type UserChanges = (Option<(ErrorCode, String)>, Vec<ControllerRequest>, usize);

fn user_entry<'a>(
    users: &'a mut BTreeMap<String, UserChanges>,
    order: &mut Vec<String>,
    name: &str,
) -> &'a mut UserChanges {
    if !users.contains_key(name) {
        order.push(name.to_string());
    }
    let e = users.entry(name.to_string()).or_insert((None, Vec::new(), 0));
    e.2 += 1;
    e
}

/// AlterUserScramCredentials, with Kafka's checks: one result per user;
/// a user named twice in one request is refused (DUPLICATE_RESOURCE).
pub async fn alter_user_scram_credentials(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: AlterUserScramCredentialsRequest = decode_or_return!(ctx, body);
    // Kafka's authorization: ALTER on the cluster.
    let denied = !ctx.access().cluster(sluice_metadata::security::Operation::Alter);
    let mut users: BTreeMap<String, UserChanges> = BTreeMap::new();
    let mut order = Vec::new();
    for d in &req.deletions {
        let e = user_entry(&mut users, &mut order, d.name.as_str());
        match ScramMechanism::from_id(d.mechanism) {
            Some(mechanism) => e.1.push(ControllerRequest::AlterScram {
                user: d.name.to_string(),
                mechanism,
                credential: None,
            }),
            None => {
                e.0.get_or_insert((ErrorCode::UnsupportedSaslMechanism, "Unknown SCRAM mechanism".into()));
            }
        }
    }
    for u in &req.upsertions {
        let e = user_entry(&mut users, &mut order, u.name.as_str());
        let Some(mechanism) = ScramMechanism::from_id(u.mechanism) else {
            e.0.get_or_insert((ErrorCode::UnsupportedSaslMechanism, "Unknown SCRAM mechanism".into()));
            continue;
        };
        if u.salt.is_empty() || u.salted_password.is_empty() {
            e.0.get_or_insert((
                ErrorCode::UnacceptableCredential,
                "The salt and the salted password must not be empty".into(),
            ));
            continue;
        }
        // Checked by the record's apply too; here to answer before asking.
        if !(ScramMechanism::MIN_ITERATIONS..=ScramMechanism::MAX_ITERATIONS).contains(&u.iterations) {
            e.0.get_or_insert((
                ErrorCode::UnacceptableCredential,
                format!(
                    "Iterations must be between {} and {}",
                    ScramMechanism::MIN_ITERATIONS,
                    ScramMechanism::MAX_ITERATIONS
                ),
            ));
            continue;
        }
        let credential = crate::security::scram::credential(mechanism, &u.salted_password, &u.salt, u.iterations);
        e.1.push(ControllerRequest::AlterScram {
            user: u.name.to_string(),
            mechanism,
            credential: Some(credential),
        });
    }
    let mut resp = AlterUserScramCredentialsResponse::default();
    for name in order {
        let Some((refused, changes, count)) = users.remove(&name) else {
            continue;
        };
        let refused = if denied {
            Some((
                ErrorCode::ClusterAuthorizationFailed,
                "Cluster authorization failed".to_string(),
            ))
        } else if name.is_empty() {
            Some((
                ErrorCode::UnacceptableCredential,
                "Username must not be empty".to_string(),
            ))
        } else if count > 1 {
            Some((
                ErrorCode::DuplicateResource,
                "A user credential cannot be altered twice in the same request".to_string(),
            ))
        } else {
            refused
        };
        let outcome = match refused {
            Some(r) => Err(r),
            None => crate::controller::ask(&ctx.shard, changes.into_iter().map(Ok).collect())
                .await
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(()), |e| Err((e.code, e.message))),
        };
        let mut r = AlterUserScramCredentialsResult::default();
        r.user = str_bytes(&name);
        if let Err((code, message)) = outcome {
            r.error_code = code.code();
            r.error_message = Some(str_bytes(&message));
        }
        resp.results.push(r);
    }
    ctx.respond(&resp)
}

/// DescribeUserScramCredentials: each user's mechanisms and iteration
/// counts (never the keys); all users when none are named.
pub fn describe_user_scram_credentials(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DescribeUserScramCredentialsRequest = decode_or_return!(ctx, body);
    // Kafka's authorization: DESCRIBE on the cluster.
    if !ctx.access().cluster(sluice_metadata::security::Operation::Describe) {
        let mut resp = DescribeUserScramCredentialsResponse::default();
        resp.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        resp.error_message = Some(str_bytes("Cluster authorization failed"));
        return ctx.respond(&resp);
    }
    let snapshot = ctx.shard.meta();
    let scram = &snapshot.security.scram;
    let describe = |user: &str| {
        let mut r = DescribeUserScramCredentialsResult::default();
        r.user = str_bytes(user);
        match scram.get(user) {
            Some(creds) => {
                r.credential_infos = creds
                    .iter()
                    .map(|(m, c)| {
                        let mut i = CredentialInfo::default();
                        i.mechanism = m.id();
                        i.iterations = c.iterations;
                        i
                    })
                    .collect();
            }
            None => {
                r.error_code = ErrorCode::ResourceNotFound.code();
                r.error_message = Some(str_bytes(&format!(
                    "Attempt to describe a user credential that does not exist: {user}"
                )));
            }
        }
        r
    };
    let mut resp = DescribeUserScramCredentialsResponse::default();
    match req.users.filter(|u| !u.is_empty()) {
        None => resp.results = scram.keys().map(|u| describe(u)).collect(),
        Some(users) => {
            for (i, u) in users.iter().enumerate() {
                let name = u.name.as_str();
                if users[..i].iter().any(|o| o.name.as_str() == name) {
                    continue;
                }
                let twice = users[i + 1..].iter().any(|o| o.name.as_str() == name);
                if twice {
                    let mut r = DescribeUserScramCredentialsResult::default();
                    r.user = str_bytes(name);
                    r.error_code = ErrorCode::DuplicateResource.code();
                    r.error_message = Some(str_bytes(&format!(
                        "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
                    )));
                    resp.results.push(r);
                } else {
                    resp.results.push(describe(name));
                }
            }
        }
    }
    ctx.respond(&resp)
}
