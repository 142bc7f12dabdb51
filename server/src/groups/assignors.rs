//! The server-side assignors of consumer groups (KIP-848): `uniform` and
//! `range`, as Kafka names them. Each maps the members' subscriptions to a
//! target assignment; both are deterministic (the same members and topics
//! give the same assignment), so a coordinator that replays the group's
//! records computes what its predecessor computed.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// A partition: its topic's id and its index.
pub type Tp = (Uuid, i32);

/// A set of partitions, ordered.
pub type Parts = BTreeSet<Tp>;

/// The assignors, by Kafka's names; the first is the default of
/// `group.consumer.assignors`.
pub const NAMES: &[&str] = crate::config::CONSUMER_ASSIGNORS;

/// One member as an assignor sees it.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub member_id: &'a str,
    /// Members are ordered by this (the static instance id, else the
    /// member id), so a static member that rejoins keeps its place.
    pub order: &'a str,
    /// Ids of the subscribed topics that exist.
    pub topics: BTreeSet<Uuid>,
    /// The member's current target, kept where it still fits (`uniform`).
    pub current: &'a Parts,
}

/// The target assignment of every member by `assignor` (a name from
/// [`NAMES`]; anything else is taken as the default). `topics` holds the
/// partition count of each subscribed topic, with its name for ordering.
pub fn assign(
    assignor: &str,
    members: &[Input<'_>],
    topics: &BTreeMap<Uuid, (String, i32)>,
) -> BTreeMap<String, Parts> {
    let mut sorted: Vec<&Input<'_>> = members.iter().collect();
    sorted.sort_by(|a, b| (a.order, a.member_id).cmp(&(b.order, b.member_id)));
    match assignor {
        "range" => range(&sorted, topics),
        _ => uniform(&sorted, topics),
    }
}

/// Topic ids ordered by topic name, then id.
fn by_name(topics: &BTreeMap<Uuid, (String, i32)>) -> Vec<(Uuid, i32)> {
    let mut v: Vec<(&str, Uuid, i32)> = topics.iter().map(|(id, (n, p))| (n.as_str(), *id, *p)).collect();
    v.sort();
    v.into_iter().map(|(_, id, p)| (id, p)).collect()
}

/// Per topic, the members subscribed to it in order split its partitions
/// into contiguous ranges; the first `partitions % members` get one more.
fn range(members: &[&Input<'_>], topics: &BTreeMap<Uuid, (String, i32)>) -> BTreeMap<String, Parts> {
    let mut out: BTreeMap<String, Parts> = members
        .iter()
        .map(|m| (m.member_id.to_string(), Parts::new()))
        .collect();
    for (topic, partitions) in by_name(topics) {
        let subs: Vec<&&Input<'_>> = members.iter().filter(|m| m.topics.contains(&topic)).collect();
        if subs.is_empty() {
            continue;
        }
        let n = usize::try_from(partitions.max(0)).unwrap_or(0);
        let (each, extra) = (n / subs.len(), n % subs.len());
        let mut next = 0usize;
        for (i, m) in subs.iter().enumerate() {
            let len = each + usize::from(i < extra);
            let set = out.entry(m.member_id.to_string()).or_default();
            for p in next..next + len {
                set.insert((topic, i32::try_from(p).unwrap_or(i32::MAX)));
            }
            next += len;
        }
    }
    out
}

/// Balanced and sticky: each member keeps what it has that it still
/// subscribes to, partitions nobody holds go one at a time to the
/// subscribed member holding fewest, and then partitions move from the
/// fullest member to one that holds at least two fewer and subscribes to
/// the partition's topic, until no such move is left. Every member ends
/// within one partition of every other member that could take its
/// partitions.
fn uniform(members: &[&Input<'_>], topics: &BTreeMap<Uuid, (String, i32)>) -> BTreeMap<String, Parts> {
    let mut held: Vec<Parts> = Vec::with_capacity(members.len());
    let mut taken = Parts::new();
    for m in members {
        let keep: Parts = m
            .current
            .iter()
            .filter(|(t, p)| {
                m.topics.contains(t) && topics.get(t).is_some_and(|(_, n)| *p < *n) && !taken.contains(&(*t, *p))
            })
            .copied()
            .collect();
        taken.extend(keep.iter().copied());
        held.push(keep);
    }
    for (topic, partitions) in by_name(topics) {
        for p in 0..partitions {
            if taken.contains(&(topic, p)) {
                continue;
            }
            let fewest = (0..members.len())
                .filter(|&i| members[i].topics.contains(&topic))
                .min_by_key(|&i| (held[i].len(), i));
            if let Some(i) = fewest {
                held[i].insert((topic, p));
            }
        }
    }
    // Even out: each move lowers the spread, so the loop ends; bounded by
    // the partition count all the same.
    let total: usize = held.iter().map(BTreeSet::len).sum();
    for _ in 0..=total {
        let Some((from, to, tp)) = best_move(members, &held) else {
            break;
        };
        held[from].remove(&tp);
        held[to].insert(tp);
    }
    members
        .iter()
        .zip(held)
        .map(|(m, parts)| (m.member_id.to_string(), parts))
        .collect()
}

/// The fullest member with a partition that a member holding at least two
/// fewer subscribes to: (from, to, partition), the partition its last.
fn best_move(members: &[&Input<'_>], held: &[Parts]) -> Option<(usize, usize, Tp)> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(held[i].len()), i));
    for &from in &order {
        let mut takers: Vec<usize> = (0..members.len())
            .filter(|&j| held[j].len() + 1 < held[from].len())
            .collect();
        takers.sort_by_key(|&j| (held[j].len(), j));
        for to in takers {
            if let Some(tp) = held[from].iter().rev().find(|(t, _)| members[to].topics.contains(t)) {
                return Some((from, to, *tp));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(list: &[(u128, &str, i32)]) -> BTreeMap<Uuid, (String, i32)> {
        list.iter()
            .map(|(id, n, p)| (Uuid::from_u128(*id), (n.to_string(), *p)))
            .collect()
    }

    fn subs(ids: &[u128]) -> BTreeSet<Uuid> {
        ids.iter().map(|i| Uuid::from_u128(*i)).collect()
    }

    fn input<'a>(id: &'a str, topics: &[u128], current: &'a Parts) -> Input<'a> {
        Input {
            member_id: id,
            order: id,
            topics: subs(topics),
            current,
        }
    }

    fn counts(a: &BTreeMap<String, Parts>) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    /// Every partition of the subscribed topics is held by exactly one
    /// member that subscribes to it.
    fn check_complete(a: &BTreeMap<String, Parts>, members: &[Input<'_>], t: &BTreeMap<Uuid, (String, i32)>) {
        let mut seen = Parts::new();
        for (id, parts) in a {
            let m = members.iter().find(|m| m.member_id == id).unwrap();
            for tp in parts {
                assert!(m.topics.contains(&tp.0), "{id} holds {tp:?} without subscribing");
                assert!(seen.insert(*tp), "{tp:?} held twice");
            }
        }
        let wanted: usize = t
            .iter()
            .filter(|(id, _)| members.iter().any(|m| m.topics.contains(id)))
            .map(|(_, (_, n))| usize::try_from(*n).unwrap())
            .sum();
        assert_eq!(seen.len(), wanted);
    }

    #[test]
    fn uniform_balances_and_keeps_what_members_hold() {
        let t = topics(&[(1, "orders", 6)]);
        let empty = Parts::new();
        let three: Vec<Input<'_>> = ["a", "b", "c"].iter().map(|id| input(id, &[1], &empty)).collect();
        let first = assign("uniform", &three, &t);
        check_complete(&first, &three, &t);
        assert_eq!(counts(&first), vec![2, 2, 2]);
        // "c" leaves: a and b keep their own and split c's.
        let two: Vec<Input<'_>> = ["a", "b"].iter().map(|id| input(id, &[1], &first[*id])).collect();
        let second = assign("uniform", &two, &t);
        check_complete(&second, &two, &t);
        assert_eq!(counts(&second), vec![3, 3]);
        for id in ["a", "b"] {
            assert!(first[id].is_subset(&second[id]), "{id} lost a partition it held");
        }
        // A fourth joins the three: it takes from the fullest, nobody
        // else moves.
        let d_current = Parts::new();
        let mut four: Vec<Input<'_>> = ["a", "b", "c"].iter().map(|id| input(id, &[1], &first[*id])).collect();
        four.push(input("d", &[1], &d_current));
        let third = assign("uniform", &four, &t);
        check_complete(&third, &four, &t);
        let moved: usize = ["a", "b", "c"]
            .iter()
            .map(|id| first[*id].difference(&third[*id]).count())
            .sum();
        assert_eq!(moved, third["d"].len());
        assert!(counts(&third).iter().all(|&n| n == 1 || n == 2));
    }

    #[test]
    fn uniform_balances_mixed_subscriptions() {
        let t = topics(&[(1, "a", 4), (2, "b", 4)]);
        let empty = Parts::new();
        let ms = vec![
            input("m1", &[1], &empty),
            input("m2", &[1, 2], &empty),
            input("m3", &[2], &empty),
        ];
        let a = assign("uniform", &ms, &t);
        check_complete(&a, &ms, &t);
        let c = counts(&a);
        assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{c:?}");
    }

    #[test]
    fn range_splits_each_topic_into_ranges() {
        let t = topics(&[(1, "x", 7), (2, "y", 2)]);
        let empty = Parts::new();
        let ms: Vec<Input<'_>> = ["b", "a", "c"].iter().map(|id| input(id, &[1, 2], &empty)).collect();
        let a = assign("range", &ms, &t);
        check_complete(&a, &ms, &t);
        let x = Uuid::from_u128(1);
        let y = Uuid::from_u128(2);
        assert_eq!(a["a"], [(x, 0), (x, 1), (x, 2), (y, 0)].into_iter().collect());
        assert_eq!(a["b"], [(x, 3), (x, 4), (y, 1)].into_iter().collect());
        assert_eq!(a["c"], [(x, 5), (x, 6)].into_iter().collect());
    }
}
