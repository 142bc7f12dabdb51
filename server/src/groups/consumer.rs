//! Consumer groups of Kafka's consumer protocol (KIP-848): the coordinator
//! computes every member's target assignment with a server-side assignor,
//! and each member moves to its target one heartbeat at a time, giving up
//! partitions before anybody else gets them.
//!
//! State that must survive a failover (the group epoch, the assignment
//! epoch, each member's subscription, epochs, assignment and target) lives
//! in records of `__consumer_offsets` ([`Record`]). Every change is made by
//! writing such a record through [`ConsumerGroup::write`], which applies it
//! with [`ConsumerGroup::apply`], the same function replay uses; the caller
//! appends the records to the log and answers once they are durable. Times
//! (session and revocation deadlines) are not replicated: a coordinator
//! that loads a group gives every member a fresh session.
//!
//! A member's way to its target (Kafka's reconciliation):
//!
//! ```text
//!   owns partitions its target lacks ──▶ UnrevokedPartitions (same epoch)
//!        │ it reports them gone                    │
//!        ▼                                         ▼
//!   new epoch; partitions another member still holds wait
//!        ├─ none wait ──▶ Stable
//!        └─ some wait ──▶ UnreleasedPartitions ── freed ──▶ Stable
//! ```
//!
//! A partition is never in two members' assignments (or pending
//! revocation) at once: it is handed out only when no other member holds it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::assignors::{self, Parts};
use crate::config::GroupConfig;
use crate::error_codes::ErrorCode;
use crate::meta::Snapshot;

/// The member epoch of a member that leaves the group.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member that leaves for now and keeps its
/// partitions until its session expires.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Where a member stands on its way to its target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Stable,
    /// It must give up `revoking` before it moves on.
    UnrevokedPartitions,
    /// Part of its target is still held by other members.
    UnreleasedPartitions,
}

/// One member, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    /// What the member may consume now.
    pub assigned: Parts,
    /// What it must give up before it gets anything new.
    pub revoking: Parts,
    /// What the assignor gave it at the group's assignment epoch.
    pub target: Parts,
}

/// The group's own record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    pub epoch: i32,
    pub assignment_epoch: i32,
    /// Partition counts of the subscribed topics at the last epoch bump.
    pub topics: BTreeMap<Uuid, i32>,
    /// The assignor that computed the current targets.
    pub assignor: String,
}

/// One change of a consumer group; `None` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Group(Option<GroupValue>),
    Member(String, Option<Box<MemberValue>>),
}

/// A ConsumerGroupHeartbeat, decoded. `None` fields did not change since
/// the member's last heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub topics: Option<Vec<String>>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    /// The partitions the member owns now.
    pub owned: Option<Parts>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer to a heartbeat that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub member_id: String,
    pub epoch: i32,
    /// Sent when it changed, on a join or a full request, or when what
    /// the member reports owning differs from it.
    pub assignment: Option<Parts>,
}

/// A refused heartbeat: the error and a message for the client.
pub type Refusal = (ErrorCode, String);

fn refuse<T>(code: ErrorCode, why: impl Into<String>) -> Result<T, Refusal> {
    Err((code, why.into()))
}

/// One consumer-protocol group.
#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub topics: BTreeMap<Uuid, i32>,
    pub assignor: String,
    pub members: BTreeMap<String, MemberValue>,
    /// When each member's session expires without a heartbeat.
    sessions: HashMap<String, Instant>,
    /// When a member that must give up partitions is fenced if it has not.
    revoke_by: HashMap<String, Instant>,
    /// Compiled subscription patterns.
    patterns: HashMap<String, regex::Regex>,
    /// The metadata version and group epoch at which the subscribed
    /// topics were last compared: a heartbeat that finds both unchanged
    /// skips the comparison (and its pattern matching over every topic).
    checked: Option<(u64, i32)>,
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Compiles a subscription pattern, matched against whole topic names (as
/// Java's `Pattern.matches`).
pub fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

impl ConsumerGroup {
    /// Applies one record: the one function every change, live or
    /// replayed, goes through. `now` only starts timers.
    pub fn apply(&mut self, r: &Record, now: Instant, cfg: &GroupConfig) {
        match r {
            Record::Group(Some(v)) => {
                assert!(
                    v.assignment_epoch <= v.epoch,
                    "assignment epoch ahead of the group epoch"
                );
                self.epoch = v.epoch;
                self.assignment_epoch = v.assignment_epoch;
                self.topics = v.topics.clone();
                self.assignor = v.assignor.clone();
            }
            Record::Group(None) => *self = Self::default(),
            Record::Member(id, Some(m)) => {
                assert!(
                    m.assigned.is_disjoint(&m.revoking),
                    "member {id} both holds and revokes a partition"
                );
                if m.state == MemberState::UnrevokedPartitions {
                    let timeout = millis(u64::try_from(m.rebalance_timeout_ms).unwrap_or(0));
                    self.revoke_by.entry(id.clone()).or_insert(now + timeout);
                } else {
                    self.revoke_by.remove(id);
                }
                self.sessions
                    .entry(id.clone())
                    .or_insert(now + millis(cfg.consumer_session_timeout_ms));
                self.members.insert(id.clone(), (**m).clone());
            }
            Record::Member(id, None) => {
                self.members.remove(id);
                self.sessions.remove(id);
                self.revoke_by.remove(id);
            }
        }
    }

    /// Applies `r` and keeps it for the log.
    fn write(&mut self, r: Record, now: Instant, cfg: &GroupConfig, out: &mut Vec<Record>) {
        self.apply(&r, now, cfg);
        out.push(r);
    }

    fn value(&self) -> GroupValue {
        GroupValue {
            epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            topics: self.topics.clone(),
            assignor: self.assignor.clone(),
        }
    }

    /// The records that replayed alone give this group's state (for the
    /// offsets log's rewrite).
    pub fn live_records(&self) -> Vec<Record> {
        let mut out = vec![Record::Group(Some(self.value()))];
        out.extend(
            self.members
                .iter()
                .map(|(id, m)| Record::Member(id.clone(), Some(Box::new(m.clone())))),
        );
        out
    }

    /// A new group epoch: the targets are computed again.
    fn bump(&mut self, topics: BTreeMap<Uuid, i32>, now: Instant, cfg: &GroupConfig, out: &mut Vec<Record>) {
        let v = GroupValue {
            epoch: self.epoch + 1,
            topics,
            ..self.value()
        };
        self.write(Record::Group(Some(v)), now, cfg, out);
    }

    fn by_instance(&self, instance: &str) -> Option<(&String, &MemberValue)> {
        self.members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
    }

    /// Handles a ConsumerGroupHeartbeat; the records it wrote are in `out`
    /// (also when it is refused after writing some).
    pub fn heartbeat(
        &mut self,
        req: Heartbeat,
        snapshot: &Snapshot,
        now: Instant,
        cfg: &GroupConfig,
        out: &mut Vec<Record>,
    ) -> Result<Answer, Refusal> {
        if let Some(p) = &req.regex
            && !self.patterns.contains_key(p)
        {
            match compile(p) {
                Ok(re) => {
                    self.patterns.insert(p.clone(), re);
                }
                Err(e) => return refuse(ErrorCode::InvalidRegularExpression, e.to_string()),
            }
        }
        match req.epoch {
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => self.leave(&req, snapshot, now, cfg, out),
            0 => {
                let joined = self.join(&req, now, cfg, out)?;
                self.after(&joined, req.owned.as_ref(), true, snapshot, now, cfg, out)
            }
            _ => {
                self.check_epoch(&req)?;
                self.update(&req, now, cfg, out);
                // A full request (a client starting over after an error,
                // as Kafka tells them apart) gets the assignment too.
                let full = req.rebalance_timeout_ms != -1
                    && (req.topics.is_some() || req.regex.is_some())
                    && req.owned.is_some();
                self.after(&req.member_id, req.owned.as_ref(), full, snapshot, now, cfg, out)
            }
        }
    }

    fn leave(
        &mut self,
        req: &Heartbeat,
        snapshot: &Snapshot,
        now: Instant,
        cfg: &GroupConfig,
        out: &mut Vec<Record>,
    ) -> Result<Answer, Refusal> {
        let id = req.member_id.clone();
        let Some(m) = self.members.get(&id) else {
            return refuse(ErrorCode::UnknownMemberId, format!("member {id} is not in the group"));
        };
        if req.instance_id.is_some() && m.instance_id != req.instance_id {
            return refuse(ErrorCode::FencedInstanceId, "the instance id belongs to another member");
        }
        if req.epoch == STATIC_LEAVE_EPOCH && m.instance_id.is_some() {
            // It keeps its partitions until its session expires; the same
            // instance joining again takes them over without a rebalance.
            let mut m = m.clone();
            if m.epoch >= 0 {
                m.previous_epoch = m.epoch;
            }
            m.epoch = STATIC_LEAVE_EPOCH;
            self.write(Record::Member(id.clone(), Some(Box::new(m))), now, cfg, out);
        } else {
            self.write(Record::Member(id.clone(), None), now, cfg, out);
            let topics = self.subscribed(snapshot);
            self.bump(topics, now, cfg, out);
            self.refresh_target(snapshot, now, cfg, out);
        }
        Ok(Answer {
            member_id: id,
            epoch: req.epoch,
            assignment: None,
        })
    }

    /// A join (member epoch 0): a new member, a member starting over, or a
    /// static member taking over its instance's place. Returns its id.
    fn join(
        &mut self,
        req: &Heartbeat,
        now: Instant,
        cfg: &GroupConfig,
        out: &mut Vec<Record>,
    ) -> Result<String, Refusal> {
        let id = req.member_id.clone();
        let fresh = MemberValue {
            instance_id: req.instance_id.clone(),
            rack_id: req.rack_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            topics: req.topics.clone().unwrap_or_default(),
            // An empty pattern is no pattern (librdkafka sends one).
            regex: req.regex.clone().filter(|r| !r.is_empty()),
            assignor: req.assignor.clone(),
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            epoch: 0,
            previous_epoch: -1,
            state: MemberState::Stable,
            assigned: Parts::new(),
            revoking: Parts::new(),
            target: Parts::new(),
        };
        if let Some(instance) = &req.instance_id
            && let Some((old_id, old)) = self.by_instance(instance)
            && (old_id != &id || old.epoch == STATIC_LEAVE_EPOCH)
        {
            if old.epoch != STATIC_LEAVE_EPOCH {
                return refuse(
                    ErrorCode::UnreleasedInstanceId,
                    format!("instance {instance} is still used by member {old_id}"),
                );
            }
            // The instance is back: it takes over its old place, epoch and
            // partitions; only a changed subscription rebalances.
            let (old_id, old) = (old_id.clone(), old.clone());
            let same = old.topics == fresh.topics && old.regex == fresh.regex && old.assignor == fresh.assignor;
            let back = MemberValue {
                epoch: old.previous_epoch.max(0),
                previous_epoch: old.previous_epoch,
                state: old.state,
                assigned: old.assigned,
                revoking: old.revoking,
                target: old.target,
                ..fresh
            };
            if old_id != id {
                self.write(Record::Member(old_id, None), now, cfg, out);
                self.sessions.remove(&id);
            }
            self.write(Record::Member(id.clone(), Some(Box::new(back))), now, cfg, out);
            if !same {
                self.bump(self.topics.clone(), now, cfg, out);
            }
            return Ok(id);
        }
        if self.members.contains_key(&id) {
            // Starting over (it was fenced or lost its state): it holds
            // nothing now.
            self.write(Record::Member(id.clone(), None), now, cfg, out);
        } else if self.members.len() >= cfg.consumer_max_size {
            return refuse(
                ErrorCode::GroupMaxSizeReached,
                format!(
                    "the group has reached group.consumer.max.size ({})",
                    cfg.consumer_max_size
                ),
            );
        }
        self.write(Record::Member(id.clone(), Some(Box::new(fresh))), now, cfg, out);
        self.bump(self.topics.clone(), now, cfg, out);
        Ok(id)
    }

    /// A known member at its epoch, or at its previous one when what it
    /// owns shows it missed the answer that moved it on.
    fn check_epoch(&self, req: &Heartbeat) -> Result<(), Refusal> {
        let Some(m) = self.members.get(&req.member_id) else {
            return refuse(
                ErrorCode::UnknownMemberId,
                format!("member {} is not in the group", req.member_id),
            );
        };
        if req.instance_id.is_some() && m.instance_id != req.instance_id {
            return refuse(ErrorCode::FencedInstanceId, "the instance id belongs to another member");
        }
        let behind_by_one =
            req.epoch == m.previous_epoch && req.owned.as_ref().is_some_and(|owned| owned.is_subset(&m.assigned));
        if m.epoch < 0 || (req.epoch != m.epoch && !behind_by_one) {
            return refuse(
                ErrorCode::FencedMemberEpoch,
                format!("member epoch {} is not the member's epoch {}", req.epoch, m.epoch),
            );
        }
        Ok(())
    }

    /// Takes the subscription fields the heartbeat carries; a change
    /// starts a new group epoch.
    fn update(&mut self, req: &Heartbeat, now: Instant, cfg: &GroupConfig, out: &mut Vec<Record>) {
        let Some(old) = self.members.get(&req.member_id) else {
            return;
        };
        let mut m = old.clone();
        if let Some(t) = &req.topics {
            m.topics = t.clone();
        }
        if req.regex.is_some() {
            m.regex = req.regex.clone().filter(|r| !r.is_empty());
        }
        if req.assignor.is_some() {
            m.assignor = req.assignor.clone();
        }
        if req.rack_id.is_some() {
            m.rack_id = req.rack_id.clone();
        }
        if req.rebalance_timeout_ms > 0 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if m == *old {
            return;
        }
        let rebalance = m.topics != old.topics || m.regex != old.regex || m.assignor != old.assignor;
        self.write(Record::Member(req.member_id.clone(), Some(Box::new(m))), now, cfg, out);
        if rebalance {
            self.bump(self.topics.clone(), now, cfg, out);
        }
    }

    /// The common end of a join and a heartbeat: renew the session, follow
    /// topic changes, compute targets if the epoch moved, and move the
    /// member towards its target.
    #[allow(clippy::too_many_arguments)]
    fn after(
        &mut self,
        id: &str,
        owned: Option<&Parts>,
        full: bool,
        snapshot: &Snapshot,
        now: Instant,
        cfg: &GroupConfig,
        out: &mut Vec<Record>,
    ) -> Result<Answer, Refusal> {
        self.sessions
            .insert(id.to_string(), now + millis(cfg.consumer_session_timeout_ms));
        if self.checked != Some((snapshot.version, self.epoch)) {
            let topics = self.subscribed(snapshot);
            if topics != self.topics {
                self.bump(topics, now, cfg, out);
            }
        }
        self.refresh_target(snapshot, now, cfg, out);
        self.checked = Some((snapshot.version, self.epoch));
        let before = self.members.get(id).map(|m| m.assigned.clone());
        self.reconcile(id, owned, now, cfg, out);
        let Some(m) = self.members.get(id) else {
            return refuse(ErrorCode::UnknownMemberId, "the member was removed");
        };
        let changed = before.as_ref() != Some(&m.assigned);
        let differs = owned.is_some_and(|o| o != &m.assigned);
        Ok(Answer {
            member_id: id.to_string(),
            epoch: m.epoch,
            assignment: (full || changed || differs).then(|| m.assigned.clone()),
        })
    }

    /// The topics of `m`'s subscription that exist (names and pattern).
    fn topics_of(&self, m: &MemberValue, snapshot: &Snapshot) -> BTreeSet<Uuid> {
        let mut out: BTreeSet<Uuid> = m
            .topics
            .iter()
            .filter_map(|n| snapshot.topic(n))
            .map(|t| t.id)
            .collect();
        if let Some(re) = m.regex.as_ref().and_then(|p| self.patterns.get(p)) {
            out.extend(
                snapshot
                    .topics
                    .iter()
                    .filter(|(n, _)| !crate::meta::is_internal(n) && re.is_match(n))
                    .map(|(_, t)| t.id),
            );
        }
        out
    }

    /// Partition counts of every topic some member subscribes to.
    fn subscribed(&mut self, snapshot: &Snapshot) -> BTreeMap<Uuid, i32> {
        // A pattern replayed from the log is compiled on first use.
        for m in self.members.values() {
            if let Some(p) = &m.regex
                && !self.patterns.contains_key(p)
                && let Ok(re) = compile(p)
            {
                self.patterns.insert(p.clone(), re);
            }
        }
        let mut out = BTreeMap::new();
        for m in self.members.values() {
            for id in self.topics_of(m, snapshot) {
                if let Some(t) = snapshot.topic_by_id(&id) {
                    out.insert(id, t.partitions);
                }
            }
        }
        out
    }

    /// The assignor most members ask for (ties: the earlier in
    /// `group.consumer.assignors`), else the broker's first.
    fn choose_assignor(&self, cfg: &GroupConfig) -> String {
        let mut votes: Vec<(usize, usize, &str)> = Vec::new();
        for m in self.members.values() {
            if let Some(a) = m.assignor.as_deref()
                && let Some(rank) = cfg.consumer_assignors.iter().position(|c| c == a)
            {
                match votes.iter_mut().find(|v| v.2 == a) {
                    Some(v) => v.0 += 1,
                    None => votes.push((1, rank, a)),
                }
            }
        }
        votes.sort_by_key(|v| (std::cmp::Reverse(v.0), v.1));
        votes
            .first()
            .map(|v| v.2.to_string())
            .or_else(|| cfg.consumer_assignors.first().cloned())
            .unwrap_or_else(|| assignors::NAMES[0].to_string())
    }

    /// Computes every member's target when the group epoch moved past the
    /// assignment epoch.
    fn refresh_target(&mut self, snapshot: &Snapshot, now: Instant, cfg: &GroupConfig, out: &mut Vec<Record>) {
        if self.epoch <= self.assignment_epoch {
            return;
        }
        let assignor = self.choose_assignor(cfg);
        let topics: BTreeMap<Uuid, (String, i32)> = self
            .topics
            .iter()
            .filter_map(|(id, n)| snapshot.topic_by_id(id).map(|t| (*id, (t.name.to_string(), *n))))
            .collect();
        let subs: Vec<(String, BTreeSet<Uuid>)> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), self.topics_of(m, snapshot)))
            .collect();
        let inputs: Vec<assignors::Input<'_>> = self
            .members
            .iter()
            .zip(&subs)
            .map(|((id, m), (_, t))| assignors::Input {
                member_id: id,
                order: m.instance_id.as_deref().unwrap_or(id),
                topics: t.clone(),
                current: &m.target,
            })
            .collect();
        let targets = assignors::assign(&assignor, &inputs, &topics);
        let changed: Vec<(String, MemberValue)> = self
            .members
            .iter()
            .filter_map(|(id, m)| {
                let target = targets.get(id).cloned().unwrap_or_default();
                (target != m.target).then(|| (id.clone(), MemberValue { target, ..m.clone() }))
            })
            .collect();
        for (id, m) in changed {
            self.write(Record::Member(id, Some(Box::new(m))), now, cfg, out);
        }
        let v = GroupValue {
            assignment_epoch: self.epoch,
            assignor,
            ..self.value()
        };
        self.write(Record::Group(Some(v)), now, cfg, out);
    }

    /// Moves member `id` one step towards its target.
    fn reconcile(&mut self, id: &str, owned: Option<&Parts>, now: Instant, cfg: &GroupConfig, out: &mut Vec<Record>) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        if m.epoch < 0 {
            return;
        }
        let mut next = m.clone();
        if m.state == MemberState::UnrevokedPartitions {
            // It moves on once what it reports owning holds none of what
            // it had to give up.
            if !owned.is_some_and(|o| o.is_disjoint(&m.revoking)) {
                return;
            }
            next.revoking.clear();
        } else if m.epoch == self.assignment_epoch && m.state == MemberState::Stable {
            return;
        }
        let revoke: Parts = next.assigned.difference(&next.target).copied().collect();
        if !revoke.is_empty() {
            next.assigned.retain(|tp| !revoke.contains(tp));
            next.revoking = revoke;
            next.state = MemberState::UnrevokedPartitions;
        } else {
            let held: Parts = self
                .members
                .iter()
                .filter(|(other, _)| other.as_str() != id)
                .flat_map(|(_, o)| o.assigned.iter().chain(&o.revoking).copied())
                .collect();
            let wanted: Vec<_> = next.target.difference(&next.assigned).copied().collect();
            let mut waiting = false;
            for tp in wanted {
                if held.contains(&tp) {
                    waiting = true;
                } else {
                    next.assigned.insert(tp);
                }
            }
            if next.epoch != self.assignment_epoch {
                next.previous_epoch = next.epoch;
                next.epoch = self.assignment_epoch;
            }
            next.state = if waiting {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
        }
        if next != *m {
            self.write(Record::Member(id.to_string(), Some(Box::new(next))), now, cfg, out);
        }
    }

    /// The next moment [`ConsumerGroup::on_timer`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sessions.values().chain(self.revoke_by.values()).min().copied()
    }

    /// Removes members whose session expired or who did not give up
    /// partitions within their rebalance timeout; the rest get new targets.
    pub fn on_timer(&mut self, group: &str, snapshot: &Snapshot, now: Instant, cfg: &GroupConfig) -> Vec<Record> {
        let mut out = Vec::new();
        let expired: Vec<(String, &'static str)> = self
            .sessions
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| (id.clone(), "session expired"))
            .chain(
                self.revoke_by
                    .iter()
                    .filter(|(_, d)| **d <= now)
                    .map(|(id, _)| (id.clone(), "did not revoke within its rebalance timeout")),
            )
            .collect();
        if expired.is_empty() {
            return out;
        }
        for (id, why) in expired {
            if self.members.contains_key(&id) {
                tracing::info!(group, member = %id, why, "removing consumer group member");
                self.write(Record::Member(id.clone(), None), now, cfg, &mut out);
            }
            self.sessions.remove(&id);
            self.revoke_by.remove(&id);
        }
        let topics = self.subscribed(snapshot);
        self.bump(topics, now, cfg, &mut out);
        self.refresh_target(snapshot, now, cfg, &mut out);
        out
    }

    /// Gives every member a fresh session (a coordinator that just loaded
    /// the group, or a member whose last heartbeat renewed it).
    pub fn renew_sessions(&mut self, now: Instant, cfg: &GroupConfig) {
        for id in self.members.keys() {
            self.sessions
                .insert(id.clone(), now + millis(cfg.consumer_session_timeout_ms));
        }
    }

    /// Kafka's name of the group's state.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self.reconciling() > 0 {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Members not yet at their target assignment (a static member away
    /// for now does not count).
    pub fn reconciling(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.epoch >= 0 && (m.epoch != self.assignment_epoch || m.state != MemberState::Stable))
            .count()
    }

    /// Checks a member's offset commit (OffsetCommit, TxnOffsetCommit):
    /// the member must exist and commit at its current epoch; a commit
    /// without member and epoch is allowed only while the group is empty.
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Option<ErrorCode> {
        if member_id.is_empty() && epoch < 0 {
            return (!self.members.is_empty()).then_some(ErrorCode::UnknownMemberId);
        }
        match self.members.get(member_id) {
            None => Some(ErrorCode::UnknownMemberId),
            Some(m) if m.epoch != epoch => Some(ErrorCode::StaleMemberEpoch),
            Some(_) => None,
        }
    }

    /// Names of the topics the members subscribe to (OffsetDelete refuses
    /// to delete their offsets).
    pub fn subscribed_names(&self, snapshot: &Snapshot) -> Vec<String> {
        let mut out = BTreeSet::new();
        for m in self.members.values() {
            for id in self.topics_of(m, snapshot) {
                if let Some(t) = snapshot.topic_by_id(&id) {
                    out.insert(t.name.to_string());
                }
            }
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::meta::TopicMeta;

    fn snapshot(topics: &[(&str, u128, i32)]) -> Snapshot {
        // Each made snapshot is a new metadata version, as the broker's.
        static VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut s = Snapshot {
            version: VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..Snapshot::default()
        };
        for (name, id, n) in topics {
            let t = TopicMeta {
                name: Arc::from(*name),
                id: Uuid::from_u128(*id),
                partitions: *n,
                configs: Default::default(),
                partition_states: Vec::new(),
            };
            s.ids.insert(t.id, t.name.clone());
            s.topics.insert(t.name.clone(), Arc::new(t));
        }
        s
    }

    fn cfg() -> GroupConfig {
        GroupConfig {
            consumer_session_timeout_ms: 10_000,
            ..GroupConfig::default()
        }
    }

    fn join(id: &str, topics: &[&str]) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            epoch: 0,
            rebalance_timeout_ms: 5000,
            topics: Some(topics.iter().map(|t| t.to_string()).collect()),
            owned: Some(Parts::new()),
            ..Heartbeat::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: &Parts) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            epoch,
            owned: Some(owned.clone()),
            ..Heartbeat::default()
        }
    }

    /// A client: what it owns, and its epoch.
    #[derive(Debug, Default, Clone)]
    struct Client {
        epoch: i32,
        owned: Parts,
    }

    impl Client {
        /// A client whose join was answered with `a`.
        fn joined(a: Answer) -> Self {
            Self {
                epoch: a.epoch,
                owned: a.assignment.unwrap_or_default(),
            }
        }

        fn heartbeat(&mut self, g: &mut ConsumerGroup, id: &str, s: &Snapshot, now: Instant) -> Vec<Record> {
            let mut out = Vec::new();
            let a = g
                .heartbeat(beat(id, self.epoch, &self.owned), s, now, &cfg(), &mut out)
                .unwrap();
            self.epoch = a.epoch;
            if let Some(parts) = a.assignment {
                self.owned = parts;
            }
            out
        }
    }

    /// No partition is owned by two clients, nor by a client while the
    /// coordinator thinks another member holds it.
    fn check_exclusive(clients: &BTreeMap<String, Client>) {
        let mut seen = Parts::new();
        for (id, c) in clients {
            for tp in &c.owned {
                assert!(seen.insert(*tp), "{tp:?} owned twice (second: {id})");
            }
        }
    }

    #[test]
    fn three_members_share_six_partitions_and_a_leave_moves_only_its_own() {
        let s = snapshot(&[("orders", 1, 6)]);
        let c = cfg();
        let now = Instant::now();
        let mut g = ConsumerGroup::default();
        let mut clients: BTreeMap<String, Client> = BTreeMap::new();
        let mut log = Vec::new();
        for id in ["a", "b", "c"] {
            let a = g.heartbeat(join(id, &["orders"]), &s, now, &c, &mut log).unwrap();
            clients.insert(id.into(), Client::joined(a));
            check_exclusive(&clients);
        }
        // A few rounds of heartbeats settle everybody at two.
        for _ in 0..4 {
            for id in ["a", "b", "c"] {
                let mut cl = clients[id].clone();
                log.extend(cl.heartbeat(&mut g, id, &s, now));
                clients.insert(id.into(), cl);
                check_exclusive(&clients);
            }
        }
        assert_eq!(g.state_name(), "Stable");
        for c in clients.values() {
            assert_eq!(c.owned.len(), 2);
            assert_eq!(c.epoch, g.assignment_epoch);
        }
        // The log replayed gives the same group.
        let mut replayed = ConsumerGroup::default();
        for r in &log {
            replayed.apply(r, now, &c);
        }
        assert_eq!(replayed.members, g.members);
        assert_eq!(
            (replayed.epoch, replayed.assignment_epoch),
            (g.epoch, g.assignment_epoch)
        );
        // "c" leaves: a and b keep theirs and take c's, one heartbeat each.
        let before = clients.clone();
        let mut out = Vec::new();
        let left = g
            .heartbeat(beat("c", LEAVE_EPOCH, &Parts::new()), &s, now, &c, &mut out)
            .unwrap();
        assert_eq!(left.epoch, LEAVE_EPOCH);
        clients.remove("c");
        for id in ["a", "b"] {
            let mut cl = clients[id].clone();
            cl.heartbeat(&mut g, id, &s, now);
            assert!(before[id].owned.is_subset(&cl.owned));
            assert_eq!(cl.owned.len(), 3);
            clients.insert(id.into(), cl);
        }
        check_exclusive(&clients);
        assert_eq!(g.state_name(), "Stable");
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_revokes_it() {
        let s = snapshot(&[("t", 1, 2)]);
        let c = cfg();
        let now = Instant::now();
        let mut g = ConsumerGroup::default();
        let mut out = Vec::new();
        let a = g.heartbeat(join("a", &["t"]), &s, now, &c, &mut out).unwrap();
        let mut ca = Client::joined(a);
        assert_eq!(ca.owned.len(), 2);
        // b joins: its target takes one of a's, which a still owns.
        let b = g.heartbeat(join("b", &["t"]), &s, now, &c, &mut out).unwrap();
        let mut cb = Client::joined(b);
        assert!(cb.owned.is_empty(), "b got a partition a still owns");
        assert_eq!(g.members["b"].state, MemberState::UnreleasedPartitions);
        // a is told to give one up, at its old epoch.
        let epoch_before = ca.epoch;
        ca.heartbeat(&mut g, "a", &s, now);
        assert_eq!(ca.owned.len(), 1);
        assert_eq!(ca.epoch, epoch_before);
        assert_eq!(g.members["a"].state, MemberState::UnrevokedPartitions);
        // b still waits: a's client dropped the partition, but a has not
        // said so yet; its next heartbeat does.
        cb.heartbeat(&mut g, "b", &s, now);
        assert!(cb.owned.is_empty());
        ca.heartbeat(&mut g, "a", &s, now);
        assert_eq!(g.members["a"].state, MemberState::Stable);
        assert_eq!(ca.epoch, g.assignment_epoch);
        cb.heartbeat(&mut g, "b", &s, now);
        assert_eq!(cb.owned.len(), 1);
        assert!(cb.owned.is_disjoint(&ca.owned));
        assert_eq!(g.state_name(), "Stable");
    }

    #[test]
    fn fencing_and_static_members() {
        let s = snapshot(&[("t", 1, 4)]);
        let c = cfg();
        let now = Instant::now();
        let mut g = ConsumerGroup::default();
        let mut out = Vec::new();
        let err = |r: Result<Answer, Refusal>| r.unwrap_err().0;
        assert_eq!(
            err(g.heartbeat(beat("nobody", 3, &Parts::new()), &s, now, &c, &mut out)),
            ErrorCode::UnknownMemberId
        );
        let mut j = join("s1", &["t"]);
        j.instance_id = Some("i1".into());
        let a = g.heartbeat(j.clone(), &s, now, &c, &mut out).unwrap();
        assert_eq!(
            err(g.heartbeat(beat("s1", a.epoch + 5, &Parts::new()), &s, now, &c, &mut out)),
            ErrorCode::FencedMemberEpoch
        );
        // Another process with the same instance id while s1 is active.
        let mut other = j.clone();
        other.member_id = "s2".into();
        assert_eq!(
            err(g.heartbeat(other.clone(), &s, now, &c, &mut out)),
            ErrorCode::UnreleasedInstanceId
        );
        // s1 leaves for now; s2 takes over its partitions and epoch
        // without a new group epoch.
        let epoch = g.epoch;
        let mut leave = beat("s1", STATIC_LEAVE_EPOCH, &Parts::new());
        leave.instance_id = Some("i1".into());
        g.heartbeat(leave, &s, now, &c, &mut out).unwrap();
        let back = g.heartbeat(other, &s, now, &c, &mut out).unwrap();
        assert_eq!(g.epoch, epoch);
        assert_eq!(back.epoch, a.epoch);
        assert_eq!(back.assignment, a.assignment);
        assert!(!g.members.contains_key("s1"));
        // An unknown pattern is refused.
        let mut bad = join("r", &[]);
        bad.topics = None;
        bad.regex = Some("(".into());
        assert_eq!(
            err(g.heartbeat(bad, &s, now, &c, &mut out)),
            ErrorCode::InvalidRegularExpression
        );
    }

    #[test]
    fn an_expired_session_frees_the_members_partitions() {
        let s = snapshot(&[("t", 1, 4)]);
        let c = cfg();
        let now = Instant::now();
        let mut g = ConsumerGroup::default();
        let mut out = Vec::new();
        g.heartbeat(join("a", &["t"]), &s, now, &c, &mut out).unwrap();
        let b = g.heartbeat(join("b", &["t"]), &s, now, &c, &mut out).unwrap();
        let later = now + Duration::from_millis(c.consumer_session_timeout_ms / 2);
        let mut cb = Client::joined(b);
        cb.heartbeat(&mut g, "b", &s, later);
        let expiry = g.next_deadline().unwrap();
        assert_eq!(expiry, now + Duration::from_millis(c.consumer_session_timeout_ms));
        let records = g.on_timer("g", &s, expiry, &c);
        assert!(records.contains(&Record::Member("a".into(), None)));
        assert!(!g.members.contains_key("a"));
        cb.heartbeat(&mut g, "b", &s, expiry);
        assert_eq!(cb.owned.len(), 4);
    }

    #[test]
    fn a_full_request_gets_the_assignment_and_a_plain_heartbeat_does_not() {
        let s = snapshot(&[("t", 1, 2)]);
        let c = cfg();
        let now = Instant::now();
        let mut g = ConsumerGroup::default();
        let mut out = Vec::new();
        let a = g.heartbeat(join("a", &["t"]), &s, now, &c, &mut out).unwrap();
        let owned = a.assignment.clone().unwrap();
        let plain = g.heartbeat(beat("a", a.epoch, &owned), &s, now, &c, &mut out).unwrap();
        assert_eq!(plain.assignment, None);
        let mut full = beat("a", a.epoch, &owned);
        full.rebalance_timeout_ms = 5000;
        full.topics = Some(vec!["t".into()]);
        let again = g.heartbeat(full, &s, now, &c, &mut out).unwrap();
        assert_eq!(again.assignment, Some(owned));
    }

    #[test]
    fn an_empty_pattern_is_no_pattern_and_starts_no_rebalance() {
        // librdkafka sends "" as its pattern on every full heartbeat.
        let s = snapshot(&[("t", 1, 2)]);
        let c = cfg();
        let now = Instant::now();
        let mut g = ConsumerGroup::default();
        let mut out = Vec::new();
        let mut j = join("a", &["t"]);
        j.regex = Some(String::new());
        let a = g.heartbeat(j, &s, now, &c, &mut out).unwrap();
        assert_eq!(g.members["a"].regex, None);
        let epoch = g.epoch;
        let mut again = beat("a", a.epoch, &a.assignment.unwrap());
        again.topics = Some(vec!["t".into()]);
        again.regex = Some(String::new());
        g.heartbeat(again, &s, now, &c, &mut out).unwrap();
        assert_eq!(
            g.epoch, epoch,
            "a heartbeat repeating the subscription bumped the epoch"
        );
    }

    #[test]
    fn added_partitions_and_a_deleted_topic_change_the_assignment() {
        let c = cfg();
        let now = Instant::now();
        let mut g = ConsumerGroup::default();
        let mut out = Vec::new();
        let two = snapshot(&[("t", 1, 2), ("u", 2, 1)]);
        let a = g.heartbeat(join("a", &["t", "u"]), &two, now, &c, &mut out).unwrap();
        let mut ca = Client::joined(a);
        assert_eq!(ca.owned.len(), 3);
        let epoch = g.epoch;
        let grown = snapshot(&[("t", 1, 4), ("u", 2, 1)]);
        ca.heartbeat(&mut g, "a", &grown, now);
        assert_eq!(ca.owned.len(), 5);
        assert!(g.epoch > epoch);
        let deleted = snapshot(&[("t", 1, 4)]);
        ca.heartbeat(&mut g, "a", &deleted, now);
        assert_eq!(ca.owned, (0..4).map(|p| (Uuid::from_u128(1), p)).collect::<Parts>());
    }

    #[test]
    fn a_pattern_picks_up_a_new_topic() {
        let c = cfg();
        let now = Instant::now();
        let mut g = ConsumerGroup::default();
        let mut out = Vec::new();
        let s1 = snapshot(&[("logs-a", 1, 2), ("other", 2, 2)]);
        let mut j = join("a", &[]);
        j.topics = None;
        j.regex = Some("logs-.*".into());
        let a = g.heartbeat(j, &s1, now, &c, &mut out).unwrap();
        let mut ca = Client::joined(a);
        assert_eq!(ca.owned.len(), 2);
        let s2 = snapshot(&[("logs-a", 1, 2), ("other", 2, 2), ("logs-b", 3, 3)]);
        ca.heartbeat(&mut g, "a", &s2, now);
        assert_eq!(ca.owned.len(), 5);
        assert_eq!(
            g.subscribed_names(&s2),
            vec!["logs-a".to_string(), "logs-b".to_string()]
        );
    }
}
