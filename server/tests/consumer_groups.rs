//! Consumer-protocol groups (KIP-848) over TCP with the protocol-level
//! client: joins and heartbeats at both versions, the request checks,
//! fencing, commits and fetches at member epochs, describe, a restart that
//! keeps the group, and the protocol switched off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Client, TestBroker};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

/// The wire value of a Kafka error.
fn code(e: ResponseError) -> i16 {
    e.code()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn start(extra: &[(&str, &str)]) -> TestBroker {
    let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    TestBroker::start(2, move |c| {
        c.set("offsets.topic.num.partitions", "4").unwrap();
        c.set("group.consumer.heartbeat.interval.ms", "700").unwrap();
        for (k, v) in &extra {
            c.set(k, v).unwrap();
        }
    })
}

/// A join (member epoch 0) subscribing to `topics`.
fn join_req(group: &str, member: &str, topics: &[&str]) -> ConsumerGroupHeartbeatRequest {
    let mut r = ConsumerGroupHeartbeatRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.member_epoch = 0;
    r.rebalance_timeout_ms = 5000;
    r.subscribed_topic_names = Some(topics.iter().map(|t| TopicName(s(t))).collect());
    r.topic_partitions = Some(Vec::new());
    r
}

/// A heartbeat at `epoch` reporting `owned` (topic id, partitions).
fn beat_req(group: &str, member: &str, epoch: i32, owned: &[(uuid::Uuid, Vec<i32>)]) -> ConsumerGroupHeartbeatRequest {
    let mut r = ConsumerGroupHeartbeatRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.member_epoch = epoch;
    r.rebalance_timeout_ms = -1;
    r.topic_partitions = Some(
        owned
            .iter()
            .map(|(t, ps)| {
                let mut tp = TopicPartitions::default();
                tp.topic_id = *t;
                tp.partitions = ps.clone();
                tp
            })
            .collect(),
    );
    r
}

fn heartbeat(c: &mut Client, version: i16, r: &ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
    c.call(ApiKey::ConsumerGroupHeartbeat, version, r)
}

/// The partitions of an answer's assignment, by topic id.
fn assigned(r: &ConsumerGroupHeartbeatResponse) -> Vec<(uuid::Uuid, Vec<i32>)> {
    r.assignment
        .as_ref()
        .map(|a| {
            a.topic_partitions
                .iter()
                .map(|t| (t.topic_id, t.partitions.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn commit(c: &mut Client, group: &str, member: &str, epoch: i32, topic: &str) -> i16 {
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.generation_id_or_member_epoch = epoch;
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = 5;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = vec![p];
    r.topics = vec![t];
    let resp: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 9, &r);
    resp.topics[0].partitions[0].error_code
}

/// OffsetFetch v9 as a member: the group's error and partition 0's offset.
fn fetch(c: &mut Client, group: &str, member: &str, epoch: i32, topic: &str) -> (i16, i64) {
    let mut t = OffsetFetchRequestTopics::default();
    t.name = TopicName(s(topic));
    t.partition_indexes = vec![0];
    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = GroupId(s(group));
    g.member_id = Some(s(member));
    g.member_epoch = epoch;
    g.topics = Some(vec![t]);
    let mut r = OffsetFetchRequest::default();
    r.groups = vec![g];
    let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 9, &r);
    let g = &resp.groups[0];
    (
        g.error_code,
        g.topics.first().map_or(-1, |t| t.partitions[0].committed_offset),
    )
}

fn describe(c: &mut Client, group: &str) -> consumer_group_describe_response::DescribedGroup {
    let mut r = ConsumerGroupDescribeRequest::default();
    r.group_ids = vec![GroupId(s(group))];
    let mut resp: ConsumerGroupDescribeResponse = c.call(ApiKey::ConsumerGroupDescribe, 1, &r);
    resp.groups.remove(0)
}

#[test]
fn members_join_commit_at_their_epoch_and_the_group_survives_a_restart() {
    let mut b = start(&[]);
    let mut c = b.client();
    common::create_topic(&mut c, "cg", 4);
    let topic = common::topic_id(&mut c, "cg");

    // v1: the client names itself; the first member gets everything.
    let a = heartbeat(&mut c, 1, &join_req("g", "member-a", &["cg"]));
    assert_eq!(a.error_code, 0, "{:?}", a.error_message);
    assert_eq!(a.member_id.as_ref().map(|m| m.to_string()).as_deref(), Some("member-a"));
    assert_eq!(a.heartbeat_interval_ms, 700);
    assert_eq!(assigned(&a), vec![(topic, vec![0, 1, 2, 3])]);
    let epoch_a = a.member_epoch;
    assert!(epoch_a >= 1);

    // v0: the coordinator names a joining member. Its target takes two
    // of a's partitions, which wait until a gives them up.
    let b_join = heartbeat(&mut c, 0, &join_req("g", "", &["cg"]));
    assert_eq!(b_join.error_code, 0);
    let member_b = b_join.member_id.as_ref().unwrap().to_string();
    assert!(!member_b.is_empty());
    assert_eq!(assigned(&b_join), vec![]);
    let a2 = heartbeat(
        &mut c,
        1,
        &beat_req("g", "member-a", epoch_a, &[(topic, vec![0, 1, 2, 3])]),
    );
    assert_eq!(a2.error_code, 0);
    assert_eq!(a2.member_epoch, epoch_a, "a keeps its epoch until it has revoked");
    let kept = assigned(&a2);
    assert_eq!(kept[0].1.len(), 2);
    // A commit at a's epoch is taken; at another epoch it is stale; an
    // unknown member is refused.
    assert_eq!(commit(&mut c, "g", "member-a", epoch_a, "cg"), 0);
    assert_eq!(
        commit(&mut c, "g", "member-a", epoch_a + 1, "cg"),
        code(ResponseError::StaleMemberEpoch)
    );
    assert_eq!(
        commit(&mut c, "g", "nobody", epoch_a, "cg"),
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        commit(&mut c, "g", "", -1, "cg"),
        code(ResponseError::UnknownMemberId),
        "a simple commit needs an empty group"
    );
    assert_eq!(fetch(&mut c, "g", "member-a", epoch_a, "cg"), (0, 5));
    assert_eq!(
        fetch(&mut c, "g", "member-a", epoch_a + 3, "cg").0,
        code(ResponseError::StaleMemberEpoch)
    );
    // a reports the two gone and moves to the new epoch; b then gets them.
    let a3 = heartbeat(&mut c, 1, &beat_req("g", "member-a", epoch_a, &kept));
    assert_eq!(a3.error_code, 0);
    let epoch = a3.member_epoch;
    assert!(epoch > epoch_a);
    let b2 = heartbeat(&mut c, 0, &beat_req("g", &member_b, b_join.member_epoch, &[]));
    assert_eq!(b2.error_code, 0);
    assert_eq!(b2.member_epoch, epoch);
    let b_parts = assigned(&b2);
    assert_eq!(b_parts[0].1.len(), 2);
    assert!(b_parts[0].1.iter().all(|p| !kept[0].1.contains(p)));
    // A heartbeat at a wrong epoch is fenced.
    let fenced = heartbeat(&mut c, 1, &beat_req("g", "member-a", epoch + 5, &kept));
    assert_eq!(fenced.error_code, code(ResponseError::FencedMemberEpoch));

    let d = describe(&mut c, "g");
    assert_eq!(d.error_code, 0);
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!((d.group_epoch, d.assignment_epoch), (epoch, epoch));
    assert_eq!(d.assignor_name.as_str(), "uniform");
    assert_eq!(d.members.len(), 2);
    assert!(d.members.iter().all(|m| m.member_type == 1 && m.member_epoch == epoch));
    // DescribeGroups is for classic groups.
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(s("g"))];
    let classic: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, 5, &r);
    assert_eq!(classic.groups[0].error_code, code(ResponseError::GroupIdNotFound));

    // A restart replays the group: same epochs, same members, and a's
    // heartbeat at its epoch is answered as before.
    drop(c);
    b.restart();
    let mut c = b.client();
    let mut after = describe(&mut c, "g");
    for _ in 0..50 {
        if after.error_code == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = describe(&mut c, "g");
    }
    assert_eq!((after.group_epoch, after.assignment_epoch), (epoch, epoch));
    let ids = |d: &consumer_group_describe_response::DescribedGroup| {
        let mut v: Vec<String> = d.members.iter().map(|m| m.member_id.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&after), ids(&d));
    let again = heartbeat(&mut c, 1, &beat_req("g", "member-a", epoch, &kept));
    assert_eq!(again.error_code, 0);
    assert_eq!(again.member_epoch, epoch);
    assert_eq!(fetch(&mut c, "g", "member-a", epoch, "cg"), (0, 5));

    // Leaving: both go, the group is empty and can be deleted.
    for (m, e) in [("member-a", epoch), (member_b.as_str(), epoch)] {
        let left = heartbeat(&mut c, 1, &beat_req("g", m, -1, &[]));
        assert_eq!((left.error_code, left.member_epoch), (0, -1), "{m} at {e}");
    }
    assert_eq!(describe(&mut c, "g").group_state.as_str(), "Empty");
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(s("g"))];
    let deleted: DeleteGroupsResponse = c.call(ApiKey::DeleteGroups, 2, &del);
    assert_eq!(deleted.results[0].error_code, 0);
    assert_eq!(describe(&mut c, "g").error_code, code(ResponseError::GroupIdNotFound));
}

#[test]
fn bad_heartbeats_get_the_errors_clients_act_on() {
    let b = start(&[]);
    let mut c = b.client();
    common::create_topic(&mut c, "bad", 2);
    let answer = |c: &mut Client, version: i16, r: &ConsumerGroupHeartbeatRequest| heartbeat(c, version, r).error_code;

    assert_eq!(
        answer(&mut c, 1, &join_req("", "m", &["bad"])),
        code(ResponseError::InvalidRequest)
    );
    assert_eq!(
        answer(&mut c, 1, &join_req("g", "", &["bad"])),
        code(ResponseError::InvalidRequest),
        "v1 needs an id"
    );
    let mut no_timeout = join_req("g", "m", &["bad"]);
    no_timeout.rebalance_timeout_ms = -1;
    assert_eq!(answer(&mut c, 1, &no_timeout), code(ResponseError::InvalidRequest));
    let mut no_subscription = join_req("g", "m", &[]);
    no_subscription.subscribed_topic_names = None;
    assert_eq!(answer(&mut c, 1, &no_subscription), code(ResponseError::InvalidRequest));
    let mut owning = join_req("g", "m", &["bad"]);
    owning.topic_partitions = Some(vec![TopicPartitions::default()]);
    assert_eq!(answer(&mut c, 1, &owning), code(ResponseError::InvalidRequest));
    let mut static_leave = beat_req("g", "m", -2, &[]);
    static_leave.instance_id = None;
    assert_eq!(answer(&mut c, 1, &static_leave), code(ResponseError::InvalidRequest));
    let mut assignor = join_req("g", "m", &["bad"]);
    assignor.server_assignor = Some(s("sticky"));
    assert_eq!(answer(&mut c, 1, &assignor), code(ResponseError::UnsupportedAssignor));
    let mut pattern = join_req("g", "m", &[]);
    pattern.subscribed_topic_regex = Some(s("(unclosed"));
    assert_eq!(
        answer(&mut c, 1, &pattern),
        code(ResponseError::InvalidRegularExpression)
    );
    assert_eq!(
        answer(&mut c, 1, &beat_req("g", "ghost", 4, &[])),
        code(ResponseError::UnknownMemberId)
    );

    // A static member's instance id while it is active.
    let mut first = join_req("st", "s1", &["bad"]);
    first.instance_id = Some(s("i"));
    assert_eq!(answer(&mut c, 1, &first), 0);
    let mut second = join_req("st", "s2", &["bad"]);
    second.instance_id = Some(s("i"));
    assert_eq!(answer(&mut c, 1, &second), code(ResponseError::UnreleasedInstanceId));

    // A classic member cannot join the consumer-protocol group.
    let mut p = join_group_request::JoinGroupRequestProtocol::default();
    p.name = s("range");
    let mut j = JoinGroupRequest::default();
    j.group_id = GroupId(s("st"));
    j.session_timeout_ms = 10_000;
    j.rebalance_timeout_ms = 10_000;
    j.protocol_type = s("consumer");
    j.protocols = vec![p];
    let joined: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &j);
    assert_eq!(joined.error_code, code(ResponseError::InconsistentGroupProtocol));
    // Nor a consumer-protocol member a classic group with members.
    let mut j2 = j.clone();
    j2.group_id = GroupId(s("classic"));
    let _: JoinGroupResponse = c.call(ApiKey::JoinGroup, 3, &j2);
    assert_eq!(
        answer(&mut c, 1, &join_req("classic", "m", &["bad"])),
        code(ResponseError::InconsistentGroupProtocol)
    );
}

#[test]
fn the_protocol_switched_off_is_not_advertised_and_refused() {
    let b = start(&[("group.coordinator.rebalance.protocols", "classic")]);
    let mut c = b.client();
    let versions: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert!(versions.api_keys.iter().all(|k| k.api_key != 68 && k.api_key != 69));
    assert!(versions.api_keys.iter().any(|k| k.api_key == ApiKey::JoinGroup as i16));
    assert_eq!(
        heartbeat(&mut c, 1, &join_req("g", "m", &["t"])).error_code,
        code(ResponseError::UnsupportedVersion)
    );
}
