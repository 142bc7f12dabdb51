//! The history checker: reads the operations a workload recorded against a
//! Kafka-protocol cluster (sends, reads, offset commits and committed-offset
//! fetches, each with its start and end time and outcome) and reports every
//! anomaly with the operations involved, split into what the durability
//! promise forbids and what it allows (`docs/reliability.md`).
//!
//! A history is JSON Lines, one [`Op`] per line. Reads whose `session` is
//! `"final"` are the drain at the end of a run: every partition read from
//! its start to its end once the faults have healed. They are the log the
//! checker holds acknowledged writes against.
//!
//! Transactions are recorded apart: a [`Op::Txn`] per transaction with the
//! values it wrote and how its producer saw it end (committed, aborted or
//! unknown), and [`Op::ReadCommitted`] for what read_committed consumers
//! received, whose `"final"` session is the read_committed drain. Their
//! checks ([`check_transactions`]): no aborted value is read, a committed
//! transaction is all in the drain, one of unknown outcome is all or
//! nothing there, no value is there twice, and reads go forward.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A produce of one uniquely numbered value.
    Send {
        process: String,
        start_ms: f64,
        end_ms: f64,
        outcome: Outcome,
        topic: String,
        partition: i32,
        /// Set when acknowledged.
        #[serde(default)]
        offset: Option<i64>,
        value: String,
        idempotent: bool,
        acks: i16,
    },
    /// One record a consumer received.
    Read {
        process: String,
        /// Reads of one session must go forward without gaps; `"final"` is
        /// the drain.
        session: String,
        start_ms: f64,
        end_ms: f64,
        topic: String,
        partition: i32,
        offset: i64,
        value: String,
    },
    /// An offset commit of a group (the next offset to read).
    Commit {
        process: String,
        start_ms: f64,
        end_ms: f64,
        outcome: Outcome,
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A committed offset as the coordinator answered it.
    FetchCommitted {
        process: String,
        start_ms: f64,
        end_ms: f64,
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// One transaction of a transactional producer: the uniquely numbered
    /// values it wrote (partition, value) and how it ended for the
    /// producer: `ok` committed, `fail` aborted, `info` unknown.
    Txn {
        process: String,
        start_ms: f64,
        end_ms: f64,
        outcome: Outcome,
        topic: String,
        values: Vec<(i32, String)>,
    },
    /// One record a read_committed consumer received; `"final"` is the
    /// read_committed drain.
    ReadCommitted {
        process: String,
        session: String,
        start_ms: f64,
        end_ms: f64,
        topic: String,
        partition: i32,
        offset: i64,
        value: String,
    },
}

/// How an operation ended: `info` is unknown (a timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

/// What the run's settings allow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowances {
    /// Unclean leader election was enabled: acknowledged writes may be lost
    /// and their offsets reused.
    pub unclean: bool,
}

/// One anomaly and the operations (by line number, from 1) that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub kind: Kind,
    pub message: String,
    pub ops: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An acks=all write acknowledged and absent from the final log.
    LostAcked,
    /// An acks=1 write acknowledged and absent (allowed).
    LostAcks1,
    /// A value stored at two offsets by an idempotent producer.
    DuplicateIdempotent,
    /// A value stored twice by a producer without idempotence (allowed:
    /// at-least-once retries).
    DuplicateNonIdempotent,
    /// One offset seen holding two values, or an acknowledged offset
    /// holding another value than the one acknowledged there.
    InconsistentOffset,
    /// A consumer session read an offset at or below one it had read.
    NonMonotonicRead,
    /// A consumer session jumped over offsets that the final log holds.
    SkippedOffsets,
    /// A read of a value no send ever carried.
    PhantomRead,
    /// A committed offset seen going backwards for a group and partition.
    CommitBackwards,
    /// A partition written to without a final drain: losses cannot be
    /// judged (the run is invalid).
    NoFinalRead,
    /// A read_committed consumer received a value of an aborted
    /// transaction.
    AbortedRead,
    /// A value of a committed transaction is not in the read_committed
    /// drain.
    CommittedMissing,
    /// A transaction of unknown outcome is in the read_committed drain in
    /// part only.
    PartialTransaction,
    /// A transactional value is in the read_committed drain more than once.
    DuplicateCommitted,
}

impl Kind {
    /// Whether the durability promise forbids it under `allow`.
    pub fn forbidden(self, allow: Allowances) -> bool {
        match self {
            Kind::LostAcks1 | Kind::DuplicateNonIdempotent => false,
            Kind::LostAcked | Kind::InconsistentOffset => !allow.unclean,
            _ => true,
        }
    }
}

/// The checker's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub operations: usize,
    pub sends: usize,
    pub acknowledged: usize,
    pub reads: usize,
    /// Anomalies by kind.
    pub counts: BTreeMap<Kind, usize>,
    /// How many anomalies the promise forbids.
    pub forbidden: usize,
    /// Up to `EXAMPLES` of each kind.
    pub anomalies: Vec<Anomaly>,
}

const EXAMPLES: usize = 20;

/// Parses a JSON Lines history.
pub fn parse(text: &str) -> Result<Vec<Op>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

type Key = (String, i32);

/// Checks a history (ops in file order; line numbers are indexes + 1).
pub fn check(ops: &[Op], allow: Allowances) -> Report {
    let mut found: Vec<Anomaly> = Vec::new();
    let mut push = |kind: Kind, message: String, ops: Vec<usize>| found.push(Anomaly { kind, message, ops });

    // Every value ever sent, and where acknowledged sends say they landed.
    let mut sent: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut acked: Vec<usize> = Vec::new();
    let (mut sends, mut reads) = (0, 0);
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Send { value, outcome, .. } => {
                sends += 1;
                sent.entry(value.as_str()).or_default().push(i);
                if *outcome == Outcome::Ok {
                    acked.push(i);
                }
            }
            Op::Read { .. } => reads += 1,
            _ => {}
        }
    }

    // What each offset was seen holding, by any read, and the final log:
    // offsets and values per partition, from the drain.
    let mut at: HashMap<(Key, i64), (&str, usize)> = HashMap::new();
    let mut final_log: HashMap<Key, BTreeMap<i64, (&str, usize)>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Read {
            session,
            topic,
            partition,
            offset,
            value,
            ..
        } = op
        {
            if session == "final" {
                final_log
                    .entry((topic.clone(), *partition))
                    .or_default()
                    .insert(*offset, (value.as_str(), i));
            }
            let k = ((topic.clone(), *partition), *offset);
            match at.get(&k) {
                Some(&(v, j)) if v != value => push(
                    Kind::InconsistentOffset,
                    format!("{topic}-{partition} offset {offset} read as `{v}` and as `{value}`"),
                    vec![j + 1, i + 1],
                ),
                Some(_) => {}
                None => {
                    at.insert(k, (value.as_str(), i));
                }
            }
            if !sent.contains_key(value.as_str()) {
                push(
                    Kind::PhantomRead,
                    format!("{topic}-{partition} offset {offset} holds `{value}`, which no send carried"),
                    vec![i + 1],
                );
            }
        }
    }

    let mut final_values: HashMap<&str, Vec<(Key, i64, usize)>> = HashMap::new();
    for (k, log) in &final_log {
        for (&o, &(v, i)) in log {
            final_values.entry(v).or_default().push((k.clone(), o, i));
        }
    }

    // Duplicates: a value stored at more than one offset.
    for (v, places) in &final_values {
        if places.len() < 2 {
            continue;
        }
        let idempotent = sent
            .get(v)
            .is_some_and(|s| s.iter().any(|&i| matches!(ops[i], Op::Send { idempotent: true, .. })));
        let kind = if idempotent {
            Kind::DuplicateIdempotent
        } else {
            Kind::DuplicateNonIdempotent
        };
        let offsets: Vec<String> = places.iter().map(|(k, o, _)| format!("{}-{}@{o}", k.0, k.1)).collect();
        push(
            kind,
            format!("`{v}` stored {} times: {}", places.len(), offsets.join(", ")),
            places.iter().map(|p| p.2 + 1).collect(),
        );
    }

    // Lost and moved acknowledged writes.
    let mut written: HashSet<Key> = HashSet::new();
    for &i in &acked {
        let Op::Send {
            topic,
            partition,
            offset,
            value,
            acks,
            ..
        } = &ops[i]
        else {
            continue;
        };
        let key = (topic.clone(), *partition);
        written.insert(key.clone());
        let Some(log) = final_log.get(&key) else {
            continue;
        };
        let here = final_values.get(value.as_str());
        match here {
            None => push(
                if *acks == 1 { Kind::LostAcks1 } else { Kind::LostAcked },
                format!(
                    "`{value}` acknowledged at {topic}-{partition}@{} (acks={acks}) is not in the final log",
                    offset.map_or("?".into(), |o| o.to_string())
                ),
                vec![i + 1],
            ),
            Some(places) => {
                if let Some(o) = offset
                    && !places.iter().any(|(k, po, _)| *k == key && po == o)
                {
                    let holder = log.get(o).map(|&(v, j)| (v, j));
                    let mut involved = vec![i + 1];
                    involved.extend(places.iter().map(|p| p.2 + 1));
                    if let Some((_, j)) = holder {
                        involved.push(j + 1);
                    }
                    push(
                        if *acks == 1 {
                            Kind::LostAcks1
                        } else {
                            Kind::InconsistentOffset
                        },
                        format!(
                            "`{value}` acknowledged at {topic}-{partition}@{o} (acks={acks}) is stored at {:?}; \
                             that offset holds {:?}",
                            places.iter().map(|p| p.1).collect::<Vec<_>>(),
                            holder.map(|h| h.0)
                        ),
                        involved,
                    );
                }
            }
        }
    }
    let mut missing: Vec<&Key> = written.iter().filter(|k| !final_log.contains_key(*k)).collect();
    missing.sort();
    for k in missing {
        push(
            Kind::NoFinalRead,
            format!("{}-{} was written to but never drained", k.0, k.1),
            Vec::new(),
        );
    }

    // Consumer sessions: forward, without gaps the final log fills.
    let mut last: HashMap<(&str, &str, Key), (i64, usize)> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let Op::Read {
            process,
            session,
            topic,
            partition,
            offset,
            ..
        } = op
        else {
            continue;
        };
        let key = (topic.clone(), *partition);
        let slot = (process.as_str(), session.as_str(), key.clone());
        if let Some(&(prev, j)) = last.get(&slot) {
            if *offset <= prev {
                push(
                    Kind::NonMonotonicRead,
                    format!("{process} ({session}) read {topic}-{partition}@{offset} after @{prev}"),
                    vec![j + 1, i + 1],
                );
            } else if let Some(log) = final_log.get(&key) {
                let skipped: Vec<i64> = log.range(prev + 1..*offset).map(|(o, _)| *o).collect();
                if !skipped.is_empty() {
                    push(
                        Kind::SkippedOffsets,
                        format!(
                            "{process} ({session}) went from {topic}-{partition}@{prev} to @{offset}, over {} stored records (first @{})",
                            skipped.len(),
                            skipped[0]
                        ),
                        vec![j + 1, i + 1],
                    );
                }
            }
        }
        last.insert(slot, (*offset, i));
    }

    // Committed offsets only move forward, as fetched in time order.
    let mut fetched: Vec<(f64, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Op::FetchCommitted { end_ms, .. } => Some((*end_ms, i)),
            _ => None,
        })
        .collect();
    fetched.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut seen: HashMap<(String, Key), (i64, usize)> = HashMap::new();
    for (_, i) in fetched {
        let Op::FetchCommitted {
            group,
            topic,
            partition,
            offset,
            start_ms,
            ..
        } = &ops[i]
        else {
            continue;
        };
        let k = (group.clone(), (topic.clone(), *partition));
        if let Some(&(prev, j)) = seen.get(&k) {
            // Only a fetch that began after the earlier one ended is
            // ordered after it.
            let earlier_end = match &ops[j] {
                Op::FetchCommitted { end_ms, .. } => *end_ms,
                _ => f64::MIN,
            };
            if *offset < prev && *start_ms > earlier_end {
                push(
                    Kind::CommitBackwards,
                    format!("group {group} {topic}-{partition}: committed offset {prev} then {offset}"),
                    vec![j + 1, i + 1],
                );
            }
        }
        if seen.get(&k).is_none_or(|&(p, _)| *offset >= p) {
            seen.insert(k, (*offset, i));
        }
    }

    check_transactions(ops, &mut push);

    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    for a in &found {
        *counts.entry(a.kind).or_default() += 1;
    }
    let forbidden = found.iter().filter(|a| a.kind.forbidden(allow)).count();
    found.sort_by_key(|a| a.kind);
    let mut per_kind: HashMap<Kind, usize> = HashMap::new();
    found.retain(|a| {
        let n = per_kind.entry(a.kind).or_default();
        *n += 1;
        *n <= EXAMPLES
    });
    Report {
        operations: ops.len(),
        sends,
        acknowledged: acked.len(),
        reads,
        counts,
        forbidden,
        anomalies: found,
    }
}

/// The checks of transactions and read_committed reads (see the module
/// doc), reported through `push`.
pub fn check_transactions(ops: &[Op], push: &mut impl FnMut(Kind, String, Vec<usize>)) {
    let (drained, drained_parts) = check_committed_reads(ops, push);
    check_committed_drain(ops, &drained, &drained_parts, push);
}

/// Each transactional value's transaction (its op index and outcome).
fn transactions(ops: &[Op]) -> HashMap<&str, (usize, Outcome)> {
    let mut txn_of = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Txn { outcome, values, .. } = op {
            for (_, v) in values {
                txn_of.insert(v.as_str(), (i, *outcome));
            }
        }
    }
    txn_of
}

/// The read_committed drain: each value's reads, and the partitions
/// drained.
type Drained<'a> = (HashMap<&'a str, Vec<usize>>, HashSet<Key>);

/// Values read_committed consumers must not see (aborted, or written by
/// no transaction) and reads going back; returns the `final` drain.
fn check_committed_reads<'a>(ops: &'a [Op], push: &mut impl FnMut(Kind, String, Vec<usize>)) -> Drained<'a> {
    let txn_of = transactions(ops);
    let mut last: HashMap<(&str, &str, Key), (i64, usize)> = HashMap::new();
    let mut drained: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut drained_parts: HashSet<Key> = HashSet::new();
    for (i, op) in ops.iter().enumerate() {
        let Op::ReadCommitted {
            process,
            session,
            topic,
            partition,
            offset,
            value,
            ..
        } = op
        else {
            continue;
        };
        let key = (topic.clone(), *partition);
        match txn_of.get(value.as_str()) {
            None => push(
                Kind::PhantomRead,
                format!("read_committed {topic}-{partition}@{offset} holds `{value}`, which no transaction wrote"),
                vec![i + 1],
            ),
            Some(&(t, Outcome::Fail)) => push(
                Kind::AbortedRead,
                format!(
                    "{process} ({session}) read `{value}` at {topic}-{partition}@{offset}, of an aborted transaction"
                ),
                vec![t + 1, i + 1],
            ),
            Some(_) => {}
        }
        let slot = (process.as_str(), session.as_str(), key.clone());
        if let Some(&(prev, j)) = last.get(&slot)
            && *offset <= prev
        {
            push(
                Kind::NonMonotonicRead,
                format!("{process} ({session}) read_committed {topic}-{partition}@{offset} after @{prev}"),
                vec![j + 1, i + 1],
            );
        }
        last.insert(slot, (*offset, i));
        if session == "final" {
            drained.entry(value.as_str()).or_default().push(i);
            drained_parts.insert(key);
        }
    }
    (drained, drained_parts)
}

/// Every partition written in transactions is drained, no value is there
/// twice, a committed transaction is there whole and one of unknown
/// outcome whole or not at all.
fn check_committed_drain(
    ops: &[Op],
    drained: &HashMap<&str, Vec<usize>>,
    drained_parts: &HashSet<Key>,
    push: &mut impl FnMut(Kind, String, Vec<usize>),
) {
    let written: HashSet<Key> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Txn { topic, values, .. } => Some(values.iter().map(move |(p, _)| (topic.clone(), *p))),
            _ => None,
        })
        .flatten()
        .collect();
    let mut undrained: Vec<&Key> = written.iter().filter(|k| !drained_parts.contains(*k)).collect();
    undrained.sort();
    for k in &undrained {
        push(
            Kind::NoFinalRead,
            format!(
                "{}-{} was written to in transactions but never drained with read_committed",
                k.0, k.1
            ),
            Vec::new(),
        );
    }
    for (v, at) in drained {
        if at.len() > 1 {
            push(
                Kind::DuplicateCommitted,
                format!("`{v}` is in the read_committed drain {} times", at.len()),
                at.iter().map(|i| i + 1).collect(),
            );
        }
    }
    for (i, op) in ops.iter().enumerate() {
        let Op::Txn {
            outcome, topic, values, ..
        } = op
        else {
            continue;
        };
        if values.iter().any(|(p, _)| undrained.contains(&&(topic.clone(), *p))) {
            continue;
        }
        let present: Vec<&str> = values
            .iter()
            .map(|(_, v)| v.as_str())
            .filter(|v| drained.contains_key(v))
            .collect();
        match outcome {
            Outcome::Ok if present.len() < values.len() => push(
                Kind::CommittedMissing,
                format!(
                    "a committed transaction of {} values has {} in the read_committed drain",
                    values.len(),
                    present.len()
                ),
                vec![i + 1],
            ),
            Outcome::Info if !present.is_empty() && present.len() < values.len() => push(
                Kind::PartialTransaction,
                format!(
                    "a transaction of unknown outcome has {} of its {} values in the read_committed drain",
                    present.len(),
                    values.len()
                ),
                vec![i + 1],
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn send(v: &str, p: i32, offset: Option<i64>, idempotent: bool, acks: i16) -> Op {
        Op::Send {
            process: "p".into(),
            start_ms: 0.0,
            end_ms: 1.0,
            outcome: if offset.is_some() { Outcome::Ok } else { Outcome::Fail },
            topic: "t".into(),
            partition: p,
            offset,
            value: v.into(),
            idempotent,
            acks,
        }
    }

    fn read(session: &str, p: i32, offset: i64, v: &str) -> Op {
        Op::Read {
            process: "c".into(),
            session: session.into(),
            start_ms: 2.0,
            end_ms: 3.0,
            topic: "t".into(),
            partition: p,
            offset,
            value: v.into(),
        }
    }

    fn fetched(offset: i64, at: f64) -> Op {
        Op::FetchCommitted {
            process: "c".into(),
            start_ms: at,
            end_ms: at + 0.5,
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            offset,
        }
    }

    fn kinds(ops: &[Op]) -> Vec<Kind> {
        let r = check(ops, Allowances::default());
        r.counts.keys().copied().collect()
    }

    /// A clean history: three acknowledged writes, read live and drained.
    fn clean() -> Vec<Op> {
        vec![
            send("a", 0, Some(0), true, -1),
            send("b", 0, Some(1), true, -1),
            send("c", 0, Some(2), true, -1),
            read("s1", 0, 0, "a"),
            read("s1", 0, 1, "b"),
            read("s1", 0, 2, "c"),
            read("final", 0, 0, "a"),
            read("final", 0, 1, "b"),
            read("final", 0, 2, "c"),
            fetched(1, 10.0),
            fetched(3, 20.0),
        ]
    }

    fn txn(outcome: Outcome, values: &[(i32, &str)]) -> Op {
        Op::Txn {
            process: "tx".into(),
            start_ms: 0.0,
            end_ms: 1.0,
            outcome,
            topic: "tt".into(),
            values: values.iter().map(|(p, v)| (*p, v.to_string())).collect(),
        }
    }

    fn read_committed(session: &str, p: i32, offset: i64, v: &str) -> Op {
        Op::ReadCommitted {
            process: "rc".into(),
            session: session.into(),
            start_ms: 2.0,
            end_ms: 3.0,
            topic: "tt".into(),
            partition: p,
            offset,
            value: v.into(),
        }
    }

    /// Three transactions over two partitions: committed, aborted,
    /// unknown (and, as it turned out, committed); read live and drained.
    fn clean_txns() -> Vec<Op> {
        vec![
            txn(Outcome::Ok, &[(0, "x1"), (1, "x2")]),
            txn(Outcome::Fail, &[(0, "y1"), (1, "y2")]),
            txn(Outcome::Info, &[(0, "z1"), (1, "z2")]),
            read_committed("live", 0, 0, "x1"),
            read_committed("live", 0, 6, "z1"),
            read_committed("final", 0, 0, "x1"),
            read_committed("final", 0, 6, "z1"),
            read_committed("final", 1, 0, "x2"),
            read_committed("final", 1, 6, "z2"),
        ]
    }

    #[test]
    fn transactions_read_committed_are_checked_for_atomicity_and_isolation() {
        let r = check(&clean_txns(), Allowances::default());
        assert_eq!(r.forbidden, 0, "{:?}", r.anomalies);
        // An aborted value read, live or in the drain.
        let mut h = clean_txns();
        h.push(read_committed("live", 1, 3, "y2"));
        assert_eq!(kinds(&h), vec![Kind::AbortedRead]);
        // A committed transaction with a value missing from the drain.
        let mut h = clean_txns();
        h.retain(|op| !matches!(op, Op::ReadCommitted { session, value, .. } if session == "final" && value == "x2"));
        assert_eq!(kinds(&h), vec![Kind::CommittedMissing]);
        // An unknown outcome half in the drain.
        let mut h = clean_txns();
        h.retain(|op| !matches!(op, Op::ReadCommitted { value, .. } if value == "z2"));
        assert_eq!(kinds(&h), vec![Kind::PartialTransaction]);
        // ... and wholly absent is an abort: fine.
        h.retain(|op| !matches!(op, Op::ReadCommitted { value, .. } if value == "z1"));
        assert!(kinds(&h).is_empty());
        // A value twice in the drain; a read going back; a phantom.
        let mut h = clean_txns();
        h.push(read_committed("final", 1, 9, "x2"));
        h.push(read_committed("live", 0, 2, "x1"));
        h.push(read_committed("live", 0, 8, "nobody"));
        assert_eq!(
            kinds(&h),
            vec![Kind::NonMonotonicRead, Kind::PhantomRead, Kind::DuplicateCommitted]
        );
        // A partition written in transactions but never drained.
        let mut h = clean_txns();
        h.retain(|op| !matches!(op, Op::ReadCommitted { session, partition: 1, .. } if session == "final"));
        assert_eq!(kinds(&h), vec![Kind::NoFinalRead]);
        assert!(check(&h, Allowances::default()).forbidden > 0);
    }

    #[test]
    fn a_clean_history_has_no_anomaly() {
        let r = check(&clean(), Allowances::default());
        assert_eq!(r.forbidden, 0, "{:?}", r.anomalies);
        assert!(r.counts.is_empty());
        assert_eq!((r.sends, r.acknowledged, r.reads), (3, 3, 6));
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught_and_named() {
        let mut h = clean();
        h.retain(|op| !matches!(op, Op::Read { session, value, .. } if session == "final" && value == "c"));
        let r = check(&h, Allowances::default());
        assert_eq!(r.counts.get(&Kind::LostAcked), Some(&1));
        assert_eq!(r.forbidden, 1);
        assert_eq!(r.anomalies[0].ops, vec![3], "the send of `c`");
        // The same loss of an acks=1 write is allowed, but reported.
        let mut h1 = h.clone();
        h1[2] = send("c", 0, Some(2), true, 1);
        let r = check(&h1, Allowances::default());
        assert_eq!((r.counts.get(&Kind::LostAcks1), r.forbidden), (Some(&1), 0));
        // And with unclean election allowed, an acks=all loss is allowed.
        assert_eq!(check(&h, Allowances { unclean: true }).forbidden, 0);
    }

    #[test]
    fn duplicates_are_split_by_idempotence() {
        let mut h = clean();
        h.push(read("final", 0, 3, "b"));
        assert!(kinds(&h).contains(&Kind::DuplicateIdempotent));
        let mut h = clean();
        h[1] = send("b", 0, Some(1), false, -1);
        h.push(read("final", 0, 3, "b"));
        let r = check(&h, Allowances::default());
        assert_eq!(r.counts.get(&Kind::DuplicateNonIdempotent), Some(&1));
        assert_eq!(r.forbidden, 0, "at-least-once without idempotence");
    }

    #[test]
    fn a_reused_offset_is_inconsistent() {
        // Offset 2 was read as `c`, and the final log holds `d` there.
        let mut h = clean();
        h.push(send("d", 0, Some(2), true, -1));
        for op in &mut h {
            if let Op::Read {
                session,
                offset: 2,
                value,
                ..
            } = op
                && session == "final"
            {
                *value = "d".into();
            }
        }
        let r = check(&h, Allowances::default());
        assert!(
            r.counts.get(&Kind::InconsistentOffset).is_some_and(|&n| n >= 1),
            "{:?}",
            r.counts
        );
        assert!(r.counts.contains_key(&Kind::LostAcked), "`c` is gone too");
    }

    #[test]
    fn reads_that_go_back_or_skip_are_caught() {
        let mut h = clean();
        h.insert(6, read("s1", 0, 1, "b"));
        assert!(kinds(&h).contains(&Kind::NonMonotonicRead));
        let mut h = clean();
        h.remove(4); // s1 jumps from 0 to 2 over a stored record
        assert!(kinds(&h).contains(&Kind::SkippedOffsets));
        // A new session may start anywhere.
        let mut h = clean();
        h.push(read("s2", 0, 2, "c"));
        assert_eq!(check(&h, Allowances::default()).forbidden, 0);
    }

    #[test]
    fn phantom_reads_and_commits_going_back_are_caught() {
        let mut h = clean();
        h.push(read("s3", 0, 7, "never-sent"));
        assert!(kinds(&h).contains(&Kind::PhantomRead));
        let mut h = clean();
        h.push(fetched(2, 30.0));
        assert!(kinds(&h).contains(&Kind::CommitBackwards));
        // Overlapping fetches are not ordered.
        let mut h = clean();
        h.push(fetched(2, 20.2));
        assert!(!kinds(&h).contains(&Kind::CommitBackwards));
    }

    #[test]
    fn a_partition_without_a_drain_makes_the_run_invalid() {
        let mut h = clean();
        h.retain(|op| !matches!(op, Op::Read { session, .. } if session == "final"));
        assert_eq!(kinds(&h), vec![Kind::NoFinalRead]);
    }

    #[test]
    fn the_history_format_round_trips() {
        let text: String = clean()
            .iter()
            .map(|op| serde_json::to_string(op).unwrap() + "\n")
            .collect();
        assert_eq!(parse(&text).unwrap(), clean());
        assert!(parse("{\"op\":\"send\"}").unwrap_err().starts_with("line 1"));
    }
}
