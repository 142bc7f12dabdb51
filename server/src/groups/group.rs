//! One consumer group's state machine, as Kafka's classic group protocol
//! defines it:
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!     ▲                 ▲      │                                      │
//!     │                 │      └── nobody left ──▶ Empty              │ leader's SyncGroup
//!     │                 └──── join, leave, expiry ◀── Stable ◀────────┘
//!     └──── last member leaves or expires (through PreparingRebalance)
//! ```
//!
//! Dead is the state of a deleted group. Everything here is synchronous and
//! driven by its caller with the current time: requests call [`Group::join`],
//! [`Group::sync`], [`Group::heartbeat`], [`Group::leave`]; the group's timer
//! calls [`Group::on_timer`] at [`Group::next_deadline`]. Answers that must
//! wait (JoinGroup until the rebalance completes, SyncGroup until the leader
//! sends the assignment) go out through one-shot channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::base::clock::now_ms;
use crate::config::GroupConfig;
use crate::error_codes::ErrorCode;

use super::consumer::ConsumerGroup;
use super::records::OffsetValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    /// The name Kafka reports in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinAnswer {
    pub error: Option<ErrorCode>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    pub members: Vec<JoinedMember>,
}

impl JoinAnswer {
    pub fn error(e: ErrorCode, member_id: &str) -> Self {
        Self {
            error: Some(e),
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncAnswer {
    pub error: Option<ErrorCode>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncAnswer {
    pub fn error(e: ErrorCode) -> Self {
        Self {
            error: Some(e),
            ..Default::default()
        }
    }
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id gets one with
    /// MEMBER_ID_REQUIRED and joins again with it.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: the leader may be told to skip assignment.
    pub version: i16,
}

/// A SyncGroup request, decoded.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    /// SyncGroup v5+: must match the group's when given.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// From the leader: each member's assignment.
    pub assignments: Vec<(String, Bytes)>,
}

/// A JoinGroup or SyncGroup either answered now or waiting for the
/// rebalance to reach the point where it can be answered.
#[derive(Debug)]
pub enum Step<A> {
    Now(A),
    Wait(oneshot::Receiver<A>),
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinAnswer>>,
    sync_waiter: Option<oneshot::Sender<SyncAnswer>>,
    /// When the session expires without a heartbeat.
    deadline: Instant,
}

impl Member {
    /// The member's metadata for `protocol` (empty when it has none).
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, other: &[(String, Bytes)]) -> bool {
        self.protocols == other
    }

    fn awaiting(&self) -> bool {
        self.join_waiter.is_some() || self.sync_waiter.is_some()
    }
}

/// The first rebalance of an empty group waits for more members.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    /// Rebalance time left after the current delay.
    remaining: Duration,
    members_at_start: usize,
}

#[derive(Debug)]
pub struct Group {
    pub id: Arc<str>,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// In join order: the first is the leader when a new one is needed.
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time by
    /// which they must join.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    initial_delay: Option<InitialDelay>,
    /// Committed offsets by topic and partition, as of the newest record
    /// appended to the offsets log (applied in log order).
    pub offsets: HashMap<(Arc<str>, i32), OffsetValue>,
    /// The log offset of the record each entry of `offsets` (or its
    /// deletion) came from, so commits finishing out of order keep the
    /// newest.
    pub offsets_at: HashMap<(Arc<str>, i32), i64>,
    /// Offsets records already in the log whose write has not finished
    /// (synced and replicated) yet, by key: the log offset of the newest
    /// such record and its value (`None` deletes). The offsets log's
    /// rewrite takes them, so that replay after it ends where the log did.
    pub unapplied: HashMap<(Arc<str>, i32), (i64, Option<OffsetValue>)>,
    /// Offsets committed inside a transaction that has not ended yet
    /// (TxnOffsetCommit, KIP-447), by producer id: each value with the log
    /// offset of its record. The producer's COMMIT marker applies them,
    /// its ABORT marker drops them.
    pub pending_txn: HashMap<i64, PendingOffsets>,
    /// Wall-clock ms since the group has had no members; offsets expire
    /// counted from here.
    pub empty_since_ms: i64,
    /// A timer task is running for this group.
    pub timer_running: bool,
    /// The group's consumer-protocol (KIP-848) state, when it is a
    /// consumer-protocol group; `None` for a classic group.
    pub consumer: Option<Box<ConsumerGroup>>,
    /// The log end after the last consumer-protocol records this group
    /// appended: a heartbeat that writes nothing still answers only once
    /// what it read is durable.
    pub written_end: i64,
}

/// One producer's offsets in a transaction not ended yet: each value with
/// the log offset of its record.
pub type PendingOffsets = HashMap<(Arc<str>, i32), (OffsetValue, i64)>;

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl Group {
    pub fn new(id: Arc<str>, now_ms: i64) -> Self {
        Self {
            id,
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: None,
            offsets: HashMap::new(),
            offsets_at: HashMap::new(),
            unapplied: HashMap::new(),
            pending_txn: HashMap::new(),
            empty_since_ms: now_ms,
            timer_running: false,
            consumer: None,
            written_end: 0,
        }
    }

    fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn by_instance(&self, instance: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.instance_id.as_deref() == Some(instance))
    }

    pub fn is_leader(&self, id: &str) -> bool {
        self.leader.as_deref() == Some(id)
    }

    /// Protocols every member supports.
    fn candidates(&self) -> Vec<String> {
        let Some(first) = self.members.first() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| self.members.iter().all(|m| m.protocols.iter().any(|(p, _)| p == n)))
            .collect()
    }

    /// Whether a member with these protocols may join: same protocol type
    /// and at least one protocol in common with everyone already in.
    fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)], replacing: Option<&str>) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| Some(m.id.as_str()) != replacing)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref().is_some_and(|t| t != protocol_type)
            || others.iter().any(|m| m.protocol_type != protocol_type)
        {
            return false;
        }
        protocols
            .iter()
            .any(|(n, _)| others.iter().all(|m| m.protocols.iter().any(|(p, _)| p == n)))
    }

    /// The protocol most members prefer among those all support.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for m in &self.members {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n))
                && let Some(v) = votes.iter_mut().find(|(c, _)| c == name)
            {
                v.1 += 1;
            }
        }
        // Ties go to the protocol listed first by the first member.
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes.into_iter().find(|(_, n)| *n == best).map(|(c, _)| c)
    }

    fn new_member_id(prefix: &str) -> String {
        let prefix = if prefix.is_empty() { "member" } else { prefix };
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }

    fn current_answer(&self, member_id: &str, with_members: bool, skip_assignment: bool) -> JoinAnswer {
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinAnswer {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            skip_assignment,
            members: if with_members {
                self.members
                    .iter()
                    .map(|m| JoinedMember {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Handles a JoinGroup. The session timeout has been checked against
    /// the broker's bounds and the group id is not empty.
    pub fn join(&mut self, req: JoinRequest, now: Instant, cfg: &GroupConfig) -> Step<JoinAnswer> {
        let fail = |e| Step::Now(JoinAnswer::error(e, &req.member_id));
        if self.state == State::Dead {
            return fail(ErrorCode::CoordinatorNotAvailable);
        }
        if req.member_id.is_empty() {
            return self.join_new(req, now, cfg);
        }
        // A known member, or one that got its id with MEMBER_ID_REQUIRED.
        if let Some(instance) = &req.instance_id
            && let Some(m) = self.by_instance(instance)
            && m.id != req.member_id
        {
            return fail(ErrorCode::FencedInstanceId);
        }
        if self.pending.remove(&req.member_id).is_some() {
            if !self.accepts(&req.protocol_type, &req.protocols, None) {
                return fail(ErrorCode::InconsistentGroupProtocol);
            }
            let id = req.member_id.clone();
            return self.add_and_rebalance(id, req, now, cfg);
        }
        let Some(m) = self.member(&req.member_id) else {
            return fail(ErrorCode::UnknownMemberId);
        };
        if !self.accepts(&req.protocol_type, &req.protocols, Some(&req.member_id)) {
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        let unchanged = m.same_protocols(&req.protocols);
        let leader = self.is_leader(&req.member_id);
        match self.state {
            State::CompletingRebalance if unchanged => {
                // The member lost our answer; send it again.
                Step::Now(self.current_answer(&req.member_id, leader, false))
            }
            State::Stable if unchanged && !leader => Step::Now(self.current_answer(&req.member_id, false, false)),
            State::Empty | State::Dead => fail(ErrorCode::UnknownMemberId),
            _ => {
                let id = req.member_id.clone();
                let rx = self.update_and_wait(&id, req, now);
                if self.state != State::PreparingRebalance {
                    self.prepare_rebalance(now, cfg);
                }
                self.maybe_complete_join(now);
                Step::Wait(rx)
            }
        }
    }

    fn join_new(&mut self, req: JoinRequest, now: Instant, cfg: &GroupConfig) -> Step<JoinAnswer> {
        if let Some(instance) = req.instance_id.clone() {
            if let Some(old_id) = self.by_instance(&instance).map(|m| m.id.clone()) {
                return self.static_rejoin(&old_id, req, now, cfg);
            }
            if !self.accepts(&req.protocol_type, &req.protocols, None) {
                return Step::Now(JoinAnswer::error(ErrorCode::InconsistentGroupProtocol, ""));
            }
            if self.members.len() + self.pending.len() >= cfg.max_size {
                return Step::Now(JoinAnswer::error(ErrorCode::GroupMaxSizeReached, ""));
            }
            let id = Self::new_member_id(&instance);
            return self.add_and_rebalance(id, req, now, cfg);
        }
        if !self.accepts(&req.protocol_type, &req.protocols, None) {
            return Step::Now(JoinAnswer::error(ErrorCode::InconsistentGroupProtocol, ""));
        }
        if self.members.len() + self.pending.len() >= cfg.max_size {
            return Step::Now(JoinAnswer::error(ErrorCode::GroupMaxSizeReached, ""));
        }
        let id = Self::new_member_id(&req.client_id);
        if req.require_known_member_id {
            self.pending.insert(id.clone(), now + millis(req.session_timeout_ms));
            return Step::Now(JoinAnswer::error(ErrorCode::MemberIdRequired, &id));
        }
        self.add_and_rebalance(id, req, now, cfg)
    }

    /// A static member came back with no member id: it takes over its old
    /// entry under a new id. In a stable group with unchanged protocols this
    /// needs no rebalance; the member gets its old assignment from SyncGroup.
    fn static_rejoin(&mut self, old_id: &str, req: JoinRequest, now: Instant, cfg: &GroupConfig) -> Step<JoinAnswer> {
        if !self.accepts(&req.protocol_type, &req.protocols, Some(old_id)) {
            return Step::Now(JoinAnswer::error(ErrorCode::InconsistentGroupProtocol, ""));
        }
        let instance = req.instance_id.clone().unwrap_or_default();
        let new_id = Self::new_member_id(&instance);
        let was_leader = self.is_leader(old_id);
        let Some(m) = self.member_mut(old_id) else {
            return Step::Now(JoinAnswer::error(ErrorCode::UnknownMemberId, ""));
        };
        // Whoever still waits under the old id has been replaced.
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinAnswer::error(ErrorCode::FencedInstanceId, old_id));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncAnswer::error(ErrorCode::FencedInstanceId));
        }
        m.protocols = req.protocols.clone();
        m.id = new_id.clone();
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.session_timeout = millis(req.session_timeout_ms);
        m.rebalance_timeout = millis(req.rebalance_timeout_ms);
        m.deadline = now + m.session_timeout;
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        // As Kafka: only a change of the selected protocol forces a
        // rebalance (the subscription metadata may differ after a restart).
        if self.state == State::Stable && self.select_protocol() == self.protocol {
            let with_members = was_leader && req.version >= 9;
            return Step::Now(self.current_answer(&new_id, with_members, was_leader));
        }
        let rx = self.update_and_wait(&new_id, req, now);
        if self.state != State::PreparingRebalance {
            self.prepare_rebalance(now, cfg);
        }
        self.maybe_complete_join(now);
        Step::Wait(rx)
    }

    fn add_and_rebalance(&mut self, id: String, req: JoinRequest, now: Instant, cfg: &GroupConfig) -> Step<JoinAnswer> {
        let session_timeout = millis(req.session_timeout_ms);
        self.members.push(Member {
            id: id.clone(),
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout,
            rebalance_timeout: millis(req.rebalance_timeout_ms),
            protocol_type: req.protocol_type.clone(),
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            join_waiter: None,
            sync_waiter: None,
            deadline: now + session_timeout,
        });
        let rx = self.update_and_wait(&id, req, now);
        if self.state != State::PreparingRebalance {
            self.prepare_rebalance(now, cfg);
        }
        self.maybe_complete_join(now);
        Step::Wait(rx)
    }

    /// Records a member's (re)join and returns where its answer will come.
    fn update_and_wait(&mut self, id: &str, req: JoinRequest, now: Instant) -> oneshot::Receiver<JoinAnswer> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.member_mut(id) {
            m.protocols = req.protocols;
            m.protocol_type = req.protocol_type;
            m.session_timeout = millis(req.session_timeout_ms);
            m.rebalance_timeout = millis(req.rebalance_timeout_ms);
            m.client_id = req.client_id;
            m.client_host = req.client_host;
            m.deadline = now + m.session_timeout;
            // A second join from the same member replaces the first.
            if let Some(old) = m.join_waiter.replace(tx) {
                let _ = old.send(JoinAnswer::error(ErrorCode::RebalanceInProgress, id));
            }
        }
        rx
    }

    /// Starts a rebalance: everyone must join again.
    fn prepare_rebalance(&mut self, now: Instant, cfg: &GroupConfig) {
        if self.state == State::CompletingRebalance {
            // Members waiting for an assignment of the old round retry.
            for m in &mut self.members {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncAnswer::error(ErrorCode::RebalanceInProgress));
                }
            }
        }
        let timeout = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        let delay = millis(cfg.initial_rebalance_delay_ms);
        if self.state == State::Empty && !delay.is_zero() {
            let first = delay.min(timeout);
            self.initial_delay = Some(InitialDelay {
                remaining: timeout.saturating_sub(first),
                members_at_start: self.members.len(),
            });
            self.rebalance_deadline = Some(now + first);
        } else {
            self.rebalance_deadline = Some(now + timeout);
        }
        self.state = State::PreparingRebalance;
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.iter().all(|m| m.join_waiter.is_some())
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance || self.initial_delay.is_some() {
            return;
        }
        if self.all_joined() {
            self.complete_join(now);
        }
    }

    /// Ends the join phase: members that did not join are out, a new
    /// generation starts, the leader gets everyone's metadata.
    fn complete_join(&mut self, now: Instant) {
        self.initial_delay = None;
        self.rebalance_deadline = None;
        self.pending.clear();
        self.members.retain(|m| m.join_waiter.is_some());
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.become_empty(now_ms());
            return;
        }
        self.protocol_type = self.members.first().map(|m| m.protocol_type.clone());
        self.protocol = self.select_protocol();
        if self.leader.as_deref().is_none_or(|l| self.member(l).is_none()) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        self.state = State::CompletingRebalance;
        let leader_answer = self.current_answer("", true, false);
        for m in &mut self.members {
            m.deadline = now + m.session_timeout;
            if let Some(w) = m.join_waiter.take() {
                let mut a = if Some(&m.id) == self.leader.as_ref() {
                    leader_answer.clone()
                } else {
                    JoinAnswer {
                        members: Vec::new(),
                        ..leader_answer.clone()
                    }
                };
                a.member_id = m.id.clone();
                let _ = w.send(a);
            }
        }
    }

    /// The last member left: the group stays, Empty, with its protocol
    /// type and offsets (as in Kafka) until the offsets expiry pass removes
    /// it once it has no offsets.
    fn become_empty(&mut self, now_ms: i64) {
        self.state = State::Empty;
        self.protocol = None;
        self.leader = None;
        self.rebalance_deadline = None;
        self.initial_delay = None;
        self.empty_since_ms = now_ms;
    }

    /// Handles a SyncGroup.
    pub fn sync(&mut self, req: SyncRequest, now: Instant) -> Step<SyncAnswer> {
        let SyncRequest {
            member_id,
            instance_id,
            generation,
            protocol_type,
            protocol_name,
            assignments,
        } = req;
        let (member_id, instance_id) = (member_id.as_str(), instance_id.as_deref());
        let (protocol_type, protocol_name) = (protocol_type.as_deref(), protocol_name.as_deref());
        let fail = |e| Step::Now(SyncAnswer::error(e));
        if self.state == State::Dead {
            return fail(ErrorCode::CoordinatorNotAvailable);
        }
        if let Err(e) = self.check_member(member_id, instance_id) {
            return fail(e);
        }
        if generation != self.generation {
            return fail(ErrorCode::IllegalGeneration);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        let answer = SyncAnswer {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: Bytes::new(),
        };
        match self.state {
            State::Empty | State::Dead => fail(ErrorCode::UnknownMemberId),
            State::PreparingRebalance => fail(ErrorCode::RebalanceInProgress),
            State::Stable => {
                let Some(m) = self.member_mut(member_id) else {
                    return fail(ErrorCode::UnknownMemberId);
                };
                m.deadline = now + m.session_timeout;
                Step::Now(SyncAnswer {
                    assignment: m.assignment.clone(),
                    ..answer
                })
            }
            State::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let leader = self.is_leader(member_id);
                if let Some(m) = self.member_mut(member_id) {
                    m.deadline = now + m.session_timeout;
                    m.sync_waiter = Some(tx);
                }
                if leader {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    self.state = State::Stable;
                    for m in &mut self.members {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncAnswer {
                                assignment: m.assignment.clone(),
                                ..answer.clone()
                            });
                        }
                    }
                }
                Step::Wait(rx)
            }
        }
    }

    /// A known member, and no other member holds the instance id given.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        if let Some(instance) = instance_id
            && let Some(m) = self.by_instance(instance)
            && m.id != member_id
        {
            return Err(ErrorCode::FencedInstanceId);
        }
        // As Kafka: a request without an instance id (older versions have
        // none) is checked by member id alone.
        self.member(member_id).ok_or(ErrorCode::UnknownMemberId)?;
        Ok(())
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Option<ErrorCode> {
        match self.state {
            State::Dead => return Some(ErrorCode::CoordinatorNotAvailable),
            State::Empty => return Some(ErrorCode::UnknownMemberId),
            _ => {}
        }
        if let Err(e) = self.check_member(member_id, instance_id) {
            return Some(e);
        }
        if generation != self.generation {
            return Some(ErrorCode::IllegalGeneration);
        }
        if let Some(m) = self.member_mut(member_id) {
            m.deadline = now + m.session_timeout;
        }
        (self.state == State::PreparingRebalance).then_some(ErrorCode::RebalanceInProgress)
    }

    /// Handles one member of a LeaveGroup: by member id, or by static
    /// instance id (with the member id empty or matching).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
        cfg: &GroupConfig,
    ) -> Option<ErrorCode> {
        if self.state == State::Dead {
            return Some(ErrorCode::CoordinatorNotAvailable);
        }
        let id = match instance_id {
            Some(instance) => match self.by_instance(instance) {
                Some(m) if member_id.is_empty() || m.id == member_id => m.id.clone(),
                Some(_) => return Some(ErrorCode::FencedInstanceId),
                None => return Some(ErrorCode::UnknownMemberId),
            },
            None => {
                if self.pending.remove(member_id).is_some() {
                    self.maybe_complete_join(now);
                    return None;
                }
                if self.member(member_id).is_none() {
                    return Some(ErrorCode::UnknownMemberId);
                }
                member_id.to_string()
            }
        };
        self.remove_member(&id, now, cfg);
        None
    }

    /// Takes a member out (left or expired) and rebalances the rest.
    fn remove_member(&mut self, id: &str, now: Instant, cfg: &GroupConfig) {
        self.members.retain(|m| m.id != id);
        if self.is_leader(id) {
            self.leader = None;
        }
        match self.state {
            State::Stable | State::CompletingRebalance => {
                self.prepare_rebalance(now, cfg);
                self.maybe_complete_join(now);
            }
            State::PreparingRebalance => self.maybe_complete_join(now),
            State::Empty | State::Dead => {}
        }
    }

    /// The next moment [`Group::on_timer`] has work: a session to expire, a
    /// pending member id to drop, or the join phase to end.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.members.iter().filter(|m| !m.awaiting()).map(|m| m.deadline);
        let pending = self.pending.values().copied();
        let consumer = self.consumer.as_ref().and_then(|c| c.next_deadline());
        sessions
            .chain(pending)
            .chain(self.rebalance_deadline)
            .chain(consumer)
            .min()
    }

    /// Expires sessions and ends the join phase when their time has come.
    pub fn on_timer(&mut self, now: Instant, cfg: &GroupConfig) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.awaiting() && m.deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "session expired");
            self.remove_member(&id, now, cfg);
        }
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        if self.pending.len() != before {
            self.maybe_complete_join(now);
        }
        if self.state == State::PreparingRebalance && self.rebalance_deadline.is_some_and(|d| d <= now) {
            match self.initial_delay {
                Some(d) if self.members.len() > d.members_at_start && !d.remaining.is_zero() => {
                    // More members came during the delay: wait once more.
                    let next = millis(cfg.initial_rebalance_delay_ms).min(d.remaining);
                    self.initial_delay = Some(InitialDelay {
                        remaining: d.remaining.saturating_sub(next),
                        members_at_start: self.members.len(),
                    });
                    self.rebalance_deadline = Some(now + next);
                }
                Some(_) => {
                    self.initial_delay = None;
                    if self.all_joined() {
                        self.complete_join(now);
                    } else {
                        let timeout = self.members.iter().map(|m| m.rebalance_timeout).max();
                        self.rebalance_deadline = Some(now + timeout.unwrap_or_default());
                    }
                }
                None => self.complete_join(now),
            }
        }
    }

    /// Checks an OffsetCommit against the group: a simple commit (no
    /// generation, no member) needs a group without members; a member's
    /// commit needs its id and the current generation.
    pub fn check_commit(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Option<ErrorCode> {
        if self.state == State::Dead {
            return Some(ErrorCode::CoordinatorNotAvailable);
        }
        if let Some(c) = &self.consumer {
            // A consumer-protocol member commits at its member epoch.
            return c.check_commit(member_id, generation);
        }
        if generation < 0 && member_id.is_empty() && instance_id.is_none() {
            return (!self.members.is_empty()).then_some(ErrorCode::UnknownMemberId);
        }
        if let Err(e) = self.check_member(member_id, instance_id) {
            return Some(e);
        }
        if generation != self.generation {
            return Some(ErrorCode::IllegalGeneration);
        }
        if self.state == State::CompletingRebalance {
            return Some(ErrorCode::RebalanceInProgress);
        }
        if let Some(m) = self.member_mut(member_id) {
            m.deadline = now + m.session_timeout;
        }
        None
    }

    /// Topics the members subscribe to, from the consumer protocol's
    /// subscription metadata (for OffsetDelete).
    pub fn subscribed_topics(&self) -> Vec<String> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return Vec::new();
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut out = Vec::new();
        for m in &self.members {
            out.extend(parse_subscription(&m.metadata_for(&protocol)));
        }
        out
    }

    /// Marks the group deleted; whoever still holds it sees Dead.
    pub fn kill(&mut self) {
        self.state = State::Dead;
        self.offsets.clear();
        self.offsets_at.clear();
        self.unapplied.clear();
    }

    /// The offsets that replaying the offsets log up to its end would give:
    /// the applied ones, overridden by newer records still being written.
    /// Sorted by topic and partition.
    pub fn live_offsets(&self) -> Vec<((Arc<str>, i32), OffsetValue)> {
        let mut live: HashMap<&(Arc<str>, i32), &OffsetValue> = self.offsets.iter().collect();
        for (key, (at, value)) in &self.unapplied {
            if self.offsets_at.get(key).is_some_and(|applied| applied > at) {
                continue;
            }
            match value {
                Some(v) => live.insert(key, v),
                None => live.remove(key),
            };
        }
        let mut out: Vec<_> = live.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Never had a member and holds nothing: a group id a request only
    /// looked up. Forgotten at once.
    pub fn is_removable(&self) -> bool {
        self.is_expirable() && self.protocol_type.is_none() && self.consumer.as_ref().is_none_or(|c| c.epoch == 0)
    }

    /// Empty with no offsets: forgotten by the next offsets expiry pass
    /// (`offsets.retention.check.interval.ms`), as Kafka's cleanup does.
    pub fn is_expirable(&self) -> bool {
        self.state == State::Empty
            && self.offsets.is_empty()
            && self.pending.is_empty()
            && self.pending_txn.is_empty()
            && self.consumer.as_ref().is_none_or(|c| c.members.is_empty())
    }

    /// No member of either protocol.
    pub fn has_members(&self) -> bool {
        !self.members.is_empty() || self.consumer.as_ref().is_some_and(|c| !c.members.is_empty())
    }

    /// Whether a transaction that has not ended holds an offset of
    /// `key` (OffsetFetch's `require_stable` answers UNSTABLE_OFFSET_COMMIT).
    pub fn has_pending_txn_offset(&self, key: &(Arc<str>, i32)) -> bool {
        self.pending_txn.values().any(|offsets| offsets.contains_key(key))
    }
}

/// The topics of a consumer-protocol subscription (version, then an array
/// of strings); unreadable metadata gives none.
fn parse_subscription(meta: &[u8]) -> Vec<String> {
    let mut r = crate::protocol::wire::Reader::new(meta);
    let mut out = Vec::new();
    if r.i16().is_err() {
        return out;
    }
    let Ok(n) = r.array_len(false) else {
        return out;
    };
    for _ in 0..n {
        match r.str(false) {
            Ok(s) => out.push(s.to_string()),
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(delay: i32) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: delay,
            ..GroupConfig::default()
        }
    }

    fn req(member: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.into(),
            instance_id: instance.map(Into::into),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: true,
            version: 9,
        }
    }

    fn sreq(member: &str, instance: Option<&str>, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
        SyncRequest {
            member_id: member.into(),
            instance_id: instance.map(Into::into),
            generation,
            assignments,
            ..Default::default()
        }
    }

    fn now_answer<A: std::fmt::Debug>(s: Step<A>) -> A {
        match s {
            Step::Now(a) => a,
            Step::Wait(_) => panic!("expected an answer now"),
        }
    }

    fn waiting<A>(s: Step<A>) -> oneshot::Receiver<A> {
        match s {
            Step::Wait(rx) => rx,
            Step::Now(_) => panic!("expected to wait"),
        }
    }

    /// Joins a new member the v4+ way: MEMBER_ID_REQUIRED, then again.
    fn join_new(g: &mut Group, now: Instant, c: &GroupConfig) -> (String, oneshot::Receiver<JoinAnswer>) {
        let a = now_answer(g.join(req("", None, &["range", "roundrobin"]), now, c));
        assert_eq!(a.error, Some(ErrorCode::MemberIdRequired));
        let id = a.member_id.clone();
        let rx = waiting(g.join(req(&id, None, &["range", "roundrobin"]), now, c));
        (id, rx)
    }

    #[test]
    fn two_members_join_sync_and_rebalance_when_one_leaves() {
        let c = cfg(0);
        let t0 = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let (a, mut rx_a) = join_new(&mut g, t0, &c);
        // Alone and everyone joined: the round completes at once.
        let ans_a = rx_a.try_recv().unwrap().unwrap();
        assert_eq!((ans_a.generation, ans_a.leader.as_str()), (1, a.as_str()));
        assert_eq!(ans_a.protocol_name.as_deref(), Some("range"));
        assert_eq!(g.state, State::CompletingRebalance);
        let sync = waiting(g.sync(sreq(&a, None, 1, vec![(a.clone(), Bytes::from("A"))]), t0));
        assert_eq!(g.state, State::Stable);
        drop(sync);

        // A second member forces a rebalance; the first learns by heartbeat.
        let (b, mut rx_b) = join_new(&mut g, t0, &c);
        assert_eq!(g.state, State::PreparingRebalance);
        assert!(rx_b.try_recv().unwrap().is_none());
        assert_eq!(g.heartbeat(&a, None, 1, t0), Some(ErrorCode::RebalanceInProgress));
        let mut rx_a = waiting(g.join(req(&a, None, &["range", "roundrobin"]), t0, &c));
        let ans_a = rx_a.try_recv().unwrap().unwrap();
        let ans_b = rx_b.try_recv().unwrap().unwrap();
        assert_eq!(ans_a.generation, 2);
        assert_eq!(ans_a.leader, a, "the leader stays while it is a member");
        assert_eq!(ans_a.members.len(), 2);
        assert!(ans_b.members.is_empty());
        // Follower syncs first and waits for the leader's assignment.
        let mut sb = waiting(g.sync(
            SyncRequest {
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                ..sreq(&b, None, 2, vec![])
            },
            t0,
        ));
        assert!(sb.try_recv().unwrap().is_none());
        let mut sa = waiting(g.sync(
            sreq(
                &a,
                None,
                2,
                vec![(a.clone(), Bytes::from("A")), (b.clone(), Bytes::from("B"))],
            ),
            t0,
        ));
        assert_eq!(sb.try_recv().unwrap().unwrap().assignment, Bytes::from("B"));
        assert_eq!(sa.try_recv().unwrap().unwrap().assignment, Bytes::from("A"));
        assert_eq!(g.heartbeat(&b, None, 1, t0), Some(ErrorCode::IllegalGeneration));
        assert_eq!(g.heartbeat(&b, None, 2, t0), None);

        // The leader leaves: b alone rejoins and becomes leader.
        assert_eq!(g.leave(&a, None, t0, &c), None);
        assert_eq!(g.state, State::PreparingRebalance);
        let mut rx_b = waiting(g.join(req(&b, None, &["range", "roundrobin"]), t0, &c));
        let ans_b = rx_b.try_recv().unwrap().unwrap();
        assert_eq!((ans_b.generation, ans_b.leader.as_str()), (3, b.as_str()));
        assert_eq!(g.leave(&b, None, t0, &c), None);
        // The last member leaving empties the group.
        assert_eq!(g.state, State::Empty);
    }

    #[test]
    fn expired_sessions_and_missing_joiners_are_removed() {
        let c = cfg(0);
        let t0 = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let (a, _rx) = join_new(&mut g, t0, &c);
        drop(waiting(g.sync(sreq(&a, None, 1, vec![]), t0)));
        let (b, _rx_b) = join_new(&mut g, t0, &c);
        // a never rejoins: at the rebalance deadline it is dropped.
        let deadline = g.next_deadline().unwrap();
        assert!(deadline > t0);
        g.on_timer(t0 + Duration::from_secs(31), &c);
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.members[0].id, b);
        assert_eq!(g.state, State::CompletingRebalance);
        // b never syncs or heartbeats: its session expires; the group empties.
        g.on_timer(t0 + Duration::from_secs(45), &c);
        assert_eq!(g.state, State::Empty);
        assert!(g.members.is_empty());
    }

    #[test]
    fn initial_delay_waits_for_more_members() {
        let c = cfg(3000);
        let t0 = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let (_a, mut rx_a) = join_new(&mut g, t0, &c);
        assert!(rx_a.try_recv().unwrap().is_none(), "waits out the initial delay");
        let (_b, mut rx_b) = join_new(&mut g, t0 + Duration::from_secs(1), &c);
        // First delay ends with a new member in: one more delay.
        g.on_timer(t0 + Duration::from_secs(3), &c);
        assert!(rx_a.try_recv().unwrap().is_none());
        g.on_timer(t0 + Duration::from_secs(6), &c);
        assert_eq!(rx_a.try_recv().unwrap().unwrap().generation, 1);
        assert_eq!(rx_b.try_recv().unwrap().unwrap().generation, 1);
    }

    #[test]
    fn static_member_rejoins_without_a_rebalance_and_fences_the_old_id() {
        let c = cfg(0);
        let t0 = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let mut rx = waiting(g.join(req("", Some("i1"), &["range"]), t0, &c));
        let first = rx.try_recv().unwrap().unwrap();
        let old = first.member_id.clone();
        drop(waiting(g.sync(
            sreq(&old, Some("i1"), 1, vec![(old.clone(), Bytes::from("X"))]),
            t0,
        )));
        assert_eq!(g.state, State::Stable);
        // Restarted: no member id, same instance id.
        let a = now_answer(g.join(req("", Some("i1"), &["range"]), t0, &c));
        assert_eq!(a.error, None);
        assert_eq!(a.generation, 1, "no new generation");
        assert!(a.skip_assignment, "it was the leader");
        assert_eq!(g.state, State::Stable);
        let s = now_answer(g.sync(sreq(&a.member_id, Some("i1"), 1, vec![]), t0));
        assert_eq!(s.assignment, Bytes::from("X"));
        assert_eq!(g.heartbeat(&old, Some("i1"), 1, t0), Some(ErrorCode::FencedInstanceId));
        assert_eq!(g.heartbeat(&a.member_id, Some("i1"), 1, t0), None);
    }

    #[test]
    fn errors_clients_act_on() {
        let c = cfg(0);
        let t0 = Instant::now();
        let mut g = Group::new("g".into(), 0);
        assert_eq!(
            now_answer(g.join(req("nobody", None, &["range"]), t0, &c)).error,
            Some(ErrorCode::UnknownMemberId)
        );
        let (a, _rx) = join_new(&mut g, t0, &c);
        let mut other = req("", None, &["cooperative-sticky"]);
        other.require_known_member_id = false;
        assert_eq!(
            now_answer(g.join(other, t0, &c)).error,
            Some(ErrorCode::InconsistentGroupProtocol)
        );
        assert_eq!(g.heartbeat("nobody", None, 1, t0), Some(ErrorCode::UnknownMemberId));
        assert_eq!(
            now_answer(g.sync(sreq(&a, None, 7, vec![]), t0)).error,
            Some(ErrorCode::IllegalGeneration)
        );
        assert_eq!(g.check_commit(1, &a, None, t0), Some(ErrorCode::RebalanceInProgress));
        assert_eq!(g.check_commit(-1, "", None, t0), Some(ErrorCode::UnknownMemberId));
        assert_eq!(g.check_commit(0, &a, None, t0), Some(ErrorCode::IllegalGeneration));
        drop(g.sync(sreq(&a, None, 1, vec![]), t0));
        assert_eq!(g.check_commit(1, &a, None, t0), None);
        assert_eq!(g.leave("nobody", None, t0, &c), Some(ErrorCode::UnknownMemberId));
        assert_eq!(g.leave(&a, None, t0, &c), None);
        assert_eq!(g.state, State::Empty);
        assert_eq!(
            g.check_commit(-1, "", None, t0),
            None,
            "simple commit to an empty group"
        );
    }

    #[test]
    fn protocol_vote_picks_what_most_members_prefer() {
        let c = cfg(0);
        let t0 = Instant::now();
        let mut g = Group::new("g".into(), 0);
        let mut r1 = req("", None, &["roundrobin", "range"]);
        r1.require_known_member_id = false;
        let _rx1 = waiting(g.join(r1, t0, &c));
        let mut r2 = req("", None, &["range", "roundrobin"]);
        r2.require_known_member_id = false;
        let _rx2 = waiting(g.join(r2, t0, &c));
        let mut r3 = req("", None, &["range", "roundrobin"]);
        r3.require_known_member_id = false;
        let _rx3 = waiting(g.join(r3, t0, &c));
        assert_eq!(g.select_protocol().as_deref(), Some("range"));
    }

    #[test]
    fn subscriptions_are_read_from_consumer_metadata() {
        // version 1, topics ["a", "bc"], no user data.
        let meta = [0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c', 255, 255, 255, 255];
        assert_eq!(parse_subscription(&meta), vec!["a", "bc"]);
        assert!(parse_subscription(&[0, 1, 127, 255, 255, 255]).is_empty());
    }

    #[test]
    fn the_offsets_to_rewrite_include_writes_still_in_flight() {
        let v = |offset: i64| OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_ms: 0,
        };
        let key = |p: i32| (Arc::<str>::from("t"), p);
        let mut g = Group::new("g".into(), 0);
        for (p, at) in [(0, 10), (1, 11), (2, 12)] {
            g.offsets.insert(key(p), v(at));
            g.offsets_at.insert(key(p), at);
        }
        // Appended after what was applied, not yet synced: these win.
        g.unapplied.insert(key(0), (20, Some(v(20))));
        g.unapplied.insert(key(1), (21, None));
        g.unapplied.insert(key(3), (22, Some(v(22))));
        // Older than what a later write already applied: ignored.
        g.unapplied.insert(key(2), (5, Some(v(5))));
        let live: Vec<(i32, i64)> = g.live_offsets().into_iter().map(|((_, p), v)| (p, v.offset)).collect();
        assert_eq!(live, vec![(0, 20), (2, 12), (3, 22)]);
        g.kill();
        assert!(g.live_offsets().is_empty());
    }
}
