//! Consumer groups over TCP with the protocol-level client: the join/sync
//! round, heartbeats, commits that survive a restart, admin APIs, session
//! expiry, and the errors clients act on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Client, TestBroker};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const MEMBER_ID_REQUIRED: i16 = 79;
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const REBALANCE_IN_PROGRESS: i16 = 27;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const INVALID_GROUP_ID: i16 = 24;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const FENCED_INSTANCE_ID: i16 = 82;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn start() -> TestBroker {
    TestBroker::start(2, |c| {
        c.set("group.initial.rebalance.delay.ms", "0").unwrap();
        c.set("group.min.session.timeout.ms", "500").unwrap();
        c.set("offsets.topic.num.partitions", "4").unwrap();
    })
}

fn create_topic(c: &mut Client, topic: &str, partitions: i32) {
    assert_eq!(common::create_topic(c, topic, partitions).topics[0].error_code, 0);
}

fn join_req(group: &str, member: &str, session_ms: i32, protocol_type: &str) -> JoinGroupRequest {
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 1, b't', 255, 255, 255, 255]);
    let mut r = JoinGroupRequest::default();
    r.group_id = GroupId(s(group));
    r.session_timeout_ms = session_ms;
    r.rebalance_timeout_ms = 5000;
    r.member_id = s(member);
    r.protocol_type = s(protocol_type);
    r.protocols = vec![p];
    r
}

/// Joins as a new member the v4+ way (MEMBER_ID_REQUIRED, then again).
fn join(c: &mut Client, group: &str, session_ms: i32) -> JoinGroupResponse {
    let first: JoinGroupResponse = c.call(ApiKey::JoinGroup, 9, &join_req(group, "", session_ms, "consumer"));
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    assert!(!first.member_id.is_empty());
    c.call(
        ApiKey::JoinGroup,
        9,
        &join_req(group, &first.member_id, session_ms, "consumer"),
    )
}

fn sync(
    c: &mut Client,
    version: i16,
    group: &str,
    member: &str,
    generation: i32,
    assign: &[(&str, &[u8])],
) -> SyncGroupResponse {
    let mut r = SyncGroupRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.generation_id = generation;
    r.assignments = assign
        .iter()
        .map(|(m, a)| {
            let mut x = SyncGroupRequestAssignment::default();
            x.member_id = s(m);
            x.assignment = Bytes::copy_from_slice(a);
            x
        })
        .collect();
    c.call(ApiKey::SyncGroup, version, &r)
}

fn heartbeat(c: &mut Client, group: &str, member: &str, generation: i32) -> i16 {
    let mut r = HeartbeatRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.generation_id = generation;
    let resp: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &r);
    resp.error_code
}

fn commit(
    c: &mut Client,
    version: i16,
    group: &str,
    member: &str,
    generation: i32,
    offsets: &[(&str, i32, i64, &str)],
) -> Vec<i16> {
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s(group));
    r.member_id = s(member);
    r.generation_id_or_member_epoch = generation;
    for (topic, p, o, meta) in offsets {
        let mut part = OffsetCommitRequestPartition::default();
        part.partition_index = *p;
        part.committed_offset = *o;
        part.committed_metadata = Some(s(meta));
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(s(topic));
        t.partitions = vec![part];
        r.topics.push(t);
    }
    let resp: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, version, &r);
    resp.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// Committed offsets of `partitions` of `topic`, through OffsetFetch v1
/// (one group) or v8 (the groups array).
fn fetch_offsets(c: &mut Client, version: i16, group: &str, topic: &str, partitions: &[i32]) -> Vec<(i64, String)> {
    let mut r = OffsetFetchRequest::default();
    if version >= 8 {
        let mut t = OffsetFetchRequestTopics::default();
        t.name = TopicName(s(topic));
        t.partition_indexes = partitions.to_vec();
        let mut g = OffsetFetchRequestGroup::default();
        g.group_id = GroupId(s(group));
        g.topics = Some(vec![t]);
        r.groups = vec![g];
        let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, version, &r);
        assert_eq!(resp.groups[0].error_code, 0);
        return resp.groups[0].topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.committed_offset,
                    p.metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                )
            })
            .collect();
    }
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partition_indexes = partitions.to_vec();
    r.group_id = GroupId(s(group));
    r.topics = Some(vec![t]);
    let resp: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, version, &r);
    resp.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.committed_offset,
                p.metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

fn describe(c: &mut Client, version: i16, group: &str) -> describe_groups_response::DescribedGroup {
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(s(group))];
    let mut resp: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, version, &r);
    resp.groups.remove(0)
}

fn delete_group(c: &mut Client, group: &str) -> i16 {
    let mut r = DeleteGroupsRequest::default();
    r.groups_names = vec![GroupId(s(group))];
    let resp: DeleteGroupsResponse = c.call(ApiKey::DeleteGroups, 2, &r);
    resp.results[0].error_code
}

#[test]
fn a_member_joins_syncs_commits_and_its_offsets_survive_restart() {
    let mut b = start();
    let mut c = b.client();
    create_topic(&mut c, "orders", 3);
    let port = b.addr().port();
    for v in 0..=6 {
        let mut r = FindCoordinatorRequest::default();
        if v >= 4 {
            r.coordinator_keys = vec![s("g1"), s("g2")];
        } else {
            r.key = s("g1");
        }
        let resp: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, v, &r);
        if v >= 4 {
            assert_eq!(resp.coordinators.len(), 2);
            assert!(
                resp.coordinators
                    .iter()
                    .all(|x| x.error_code == 0 && x.port == i32::from(port))
            );
        } else {
            assert_eq!((resp.error_code, resp.node_id.0, resp.port), (0, 0, i32::from(port)));
        }
    }

    let j = join(&mut c, "g1", 10_000);
    assert_eq!(j.error_code, 0);
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader, j.member_id);
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert_eq!(j.members.len(), 1);
    let me = j.member_id.to_string();
    for v in [0, 3, 5] {
        let sr = sync(&mut c, v, "g1", &me, 1, &[(&me, b"assignment")]);
        assert_eq!(
            (sr.error_code, &sr.assignment[..]),
            (0, &b"assignment"[..]),
            "SyncGroup v{v}"
        );
    }
    assert_eq!(heartbeat(&mut c, "g1", &me, 1), 0);
    assert_eq!(heartbeat(&mut c, "g1", &me, 0), ILLEGAL_GENERATION);
    assert_eq!(heartbeat(&mut c, "g1", "ghost", 1), UNKNOWN_MEMBER_ID);

    assert_eq!(
        commit(
            &mut c,
            8,
            "g1",
            &me,
            1,
            &[("orders", 0, 42, "m0"), ("orders", 2, 7, "")]
        ),
        vec![0, 0]
    );
    let long = "x".repeat(5000);
    assert_eq!(
        commit(&mut c, 8, "g1", &me, 1, &[("orders", 1, 1, &long), ("nope", 0, 1, "")]),
        vec![OFFSET_METADATA_TOO_LARGE, UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(
        commit(&mut c, 8, "g1", &me, 0, &[("orders", 1, 1, "")]),
        vec![ILLEGAL_GENERATION]
    );
    assert_eq!(
        commit(&mut c, 2, "g1", "", -1, &[("orders", 1, 1, "")]),
        vec![UNKNOWN_MEMBER_ID]
    );
    let want = vec![(42, "m0".to_string()), (-1, String::new()), (7, String::new())];
    assert_eq!(fetch_offsets(&mut c, 7, "g1", "orders", &[0, 1, 2]), want);
    assert_eq!(fetch_offsets(&mut c, 8, "g1", "orders", &[0, 1, 2]), want);

    let d = describe(&mut c, 5, "g1");
    assert_eq!(
        (d.error_code, d.group_state.as_str(), d.protocol_data.as_str()),
        (0, "Stable", "range")
    );
    assert_eq!(d.members.len(), 1);
    assert_eq!(&d.members[0].member_assignment[..], b"assignment");
    assert_eq!(d.members[0].client_host.as_str(), "/127.0.0.1");
    let mut lr = ListGroupsRequest::default();
    lr.states_filter = vec![s("stable")];
    let listed: ListGroupsResponse = c.call(ApiKey::ListGroups, 4, &lr);
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(listed.groups[0].group_id.as_str(), "g1");
    assert_eq!(delete_group(&mut c, "g1"), NON_EMPTY_GROUP);

    let mut leave = LeaveGroupRequest::default();
    leave.group_id = GroupId(s("g1"));
    let mut m = MemberIdentity::default();
    m.member_id = s(&me);
    leave.members = vec![m];
    let lr: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, 3, &leave);
    assert_eq!((lr.error_code, lr.members[0].error_code), (0, 0));
    assert_eq!(describe(&mut c, 5, "g1").group_state.as_str(), "Empty");

    drop(c);
    b.restart();
    let mut c = b.client();
    assert_eq!(fetch_offsets(&mut c, 1, "g1", "orders", &[0, 1, 2]), want);
    assert_eq!(fetch_offsets(&mut c, 8, "g1", "orders", &[0, 1, 2]), want);
    assert_eq!(describe(&mut c, 5, "g1").group_state.as_str(), "Empty");
    // A group-less consumer may commit into the empty group.
    assert_eq!(commit(&mut c, 2, "g1", "", -1, &[("orders", 1, 5, "")]), vec![0]);
    let mut od = OffsetDeleteRequest::default();
    od.group_id = GroupId(s("g1"));
    let mut t = OffsetDeleteRequestTopic::default();
    t.name = TopicName(s("orders"));
    t.partitions = vec![OffsetDeleteRequestPartition::default()];
    od.topics = vec![t];
    let odr: OffsetDeleteResponse = c.call(ApiKey::OffsetDelete, 0, &od);
    assert_eq!((odr.error_code, odr.topics[0].partitions[0].error_code), (0, 0));
    assert_eq!(
        fetch_offsets(&mut c, 8, "g1", "orders", &[0, 1]),
        vec![(-1, String::new()), (5, String::new())]
    );
    assert_eq!(delete_group(&mut c, "g1"), 0);
    assert_eq!(delete_group(&mut c, "g1"), GROUP_ID_NOT_FOUND);
    let gone = describe(&mut c, 6, "g1");
    assert_eq!(
        (gone.error_code, gone.group_state.as_str()),
        (GROUP_ID_NOT_FOUND, "Dead")
    );
    drop(c);
    // Deleted stays deleted across a restart.
    b.restart();
    let mut c = b.client();
    assert_eq!(
        fetch_offsets(&mut c, 8, "g1", "orders", &[1]),
        vec![(-1, String::new())]
    );
}

#[test]
fn bad_group_requests_get_the_errors_clients_act_on() {
    let b = start();
    let mut c = b.client();
    let join_err = |c: &mut Client, r: &JoinGroupRequest| -> i16 {
        let resp: JoinGroupResponse = c.call(ApiKey::JoinGroup, 9, r);
        resp.error_code
    };
    assert_eq!(
        join_err(&mut c, &join_req("g", "", 10, "consumer")),
        INVALID_SESSION_TIMEOUT
    );
    assert_eq!(
        join_err(&mut c, &join_req("g", "", 1_000_000_000, "consumer")),
        INVALID_SESSION_TIMEOUT
    );
    assert_eq!(
        join_err(&mut c, &join_req("", "", 10_000, "consumer")),
        INVALID_GROUP_ID
    );
    assert_eq!(
        join_err(&mut c, &join_req("g", "ghost", 10_000, "consumer")),
        UNKNOWN_MEMBER_ID
    );
    let j = join(&mut c, "g", 10_000);
    let me = j.member_id.to_string();
    // Another member with another protocol type cannot join this group.
    let mut other = join_req("g", "", 10_000, "connect");
    other.protocol_type = s("connect");
    let resp: JoinGroupResponse = c.call(ApiKey::JoinGroup, 3, &other);
    assert_eq!(resp.error_code, INCONSISTENT_GROUP_PROTOCOL);
    assert_eq!(sync(&mut c, 5, "g", &me, 9, &[]).error_code, ILLEGAL_GENERATION);
    assert_eq!(sync(&mut c, 5, "g", "ghost", 1, &[]).error_code, UNKNOWN_MEMBER_ID);
    assert_eq!(sync(&mut c, 5, "", &me, 1, &[]).error_code, INVALID_GROUP_ID);
    // A static member's instance id cannot be claimed by another member id.
    let mut st = join_req("s", "", 10_000, "consumer");
    st.group_instance_id = Some(s("inst-1"));
    let sj: JoinGroupResponse = c.call(ApiKey::JoinGroup, 9, &st);
    assert_eq!(sj.error_code, 0);
    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(s("s"));
    hb.member_id = s("someone-else");
    hb.generation_id = sj.generation_id;
    hb.group_instance_id = Some(s("inst-1"));
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &hb);
    assert_eq!(r.error_code, FENCED_INSTANCE_ID);

    // The offsets topic is the broker's own.
    let mut md = MetadataRequest::default();
    md.topics = None;
    let meta: MetadataResponse = c.call(ApiKey::Metadata, 12, &md);
    let internal = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "__consumer_offsets"))
        .expect("offsets topic listed");
    assert!(internal.is_internal);
    assert_eq!(internal.partitions.len(), 4);
    let mut del = DeleteTopicsRequest::default();
    del.topic_names = vec![TopicName(s("__consumer_offsets"))];
    let dr: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 5, &del);
    assert_eq!(dr.responses[0].error_code, INVALID_TOPIC_EXCEPTION);

    // A truncated JoinGroup closes the connection; the broker serves on.
    let (_, frame) = c.frame(ApiKey::JoinGroup, 5, &join_req("g", "", 10_000, "consumer"));
    let mut cut = frame[..frame.len() - 6].to_vec();
    let len = (cut.len() - 4) as i32;
    cut[..4].copy_from_slice(&len.to_be_bytes());
    c.send_raw(&cut);
    assert!(c.is_closed());
    let mut c2 = b.client();
    assert_eq!(heartbeat(&mut c2, "g", &me, 1), 0);
}

#[test]
fn a_silent_member_is_expired_and_the_other_takes_over() {
    let b = start();
    let addr = b.addr();
    let mut a = b.client();
    let ja = join(&mut a, "g", 800);
    let a_id = ja.member_id.to_string();
    assert_eq!(sync(&mut a, 5, "g", &a_id, 1, &[(&a_id, b"all")]).error_code, 0);

    // B joins from another connection; its JoinGroup waits for A to rejoin.
    let joiner = std::thread::spawn(move || {
        let mut bc = Client::connect(addr);
        let j = join(&mut bc, "g", 800);
        (bc, j)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match heartbeat(&mut a, "g", &a_id, 1) {
            REBALANCE_IN_PROGRESS => break,
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("heartbeat gave {other}"),
        }
    }
    let ja2: JoinGroupResponse = a.call(ApiKey::JoinGroup, 9, &join_req("g", &a_id, 800, "consumer"));
    let (mut bc, jb) = joiner.join().unwrap();
    assert_eq!((ja2.generation_id, jb.generation_id), (2, 2));
    assert_eq!(ja2.members.len(), 2, "A stays leader and sees both");
    assert!(jb.members.is_empty());
    let b_id = jb.member_id.to_string();
    assert_eq!(
        sync(&mut a, 5, "g", &a_id, 2, &[(&a_id, b"a"), (&b_id, b"b")]).assignment,
        &b"a"[..]
    );
    assert_eq!(sync(&mut bc, 5, "g", &b_id, 2, &[]).assignment, &b"b"[..]);

    // B goes silent; A keeps heartbeating and sees the rebalance once B's
    // 800 ms session has expired.
    let silent_since = Instant::now();
    loop {
        match heartbeat(&mut a, "g", &a_id, 2) {
            0 => std::thread::sleep(Duration::from_millis(50)),
            REBALANCE_IN_PROGRESS => break,
            other => panic!("heartbeat gave {other}"),
        }
        assert!(silent_since.elapsed() < Duration::from_secs(5), "B never expired");
    }
    assert!(silent_since.elapsed() >= Duration::from_millis(700));
    let ja3: JoinGroupResponse = a.call(ApiKey::JoinGroup, 9, &join_req("g", &a_id, 800, "consumer"));
    assert_eq!((ja3.error_code, ja3.generation_id, ja3.members.len()), (0, 3, 1));
    assert_eq!(heartbeat(&mut bc, "g", &b_id, 2), UNKNOWN_MEMBER_ID);
}

#[test]
fn every_group_api_answers_at_every_version() {
    let b = start();
    let mut c = b.client();
    create_topic(&mut c, "t", 1);
    // A static member, so instance ids appear in the answers that have them.
    let mut j = join_req("v", "", 10_000, "consumer");
    j.group_instance_id = Some(s("inst"));
    let first: JoinGroupResponse = c.call(ApiKey::JoinGroup, 9, &j);
    assert_eq!(first.error_code, 0);
    let me = first.member_id.to_string();
    assert_eq!(sync(&mut c, 5, "v", &me, 1, &[(&me, b"x")]).error_code, 0);
    // Without an instance id (older versions have none) the member id
    // alone decides, as in Kafka.
    assert_eq!(commit(&mut c, 6, "v", &me, 1, &[("t", 0, 2, "m")]), vec![0]);
    let mut oc = OffsetCommitRequest::default();
    oc.group_id = GroupId(s("v"));
    oc.member_id = s(&me);
    oc.generation_id_or_member_epoch = 1;
    oc.group_instance_id = Some(s("inst"));
    let mut part = OffsetCommitRequestPartition::default();
    part.committed_offset = 3;
    part.committed_leader_epoch = 0;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s("t"));
    t.partitions = vec![part];
    oc.topics = vec![t];
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 9, &oc);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    // Each answer decodes at each version (the client checks every byte).
    // The leader rejoining a Stable group starts generation 2; rejoining
    // while that round awaits its SyncGroup repeats the same answer.
    let generation = 2;
    for v in 5..=9 {
        let mut rejoin = join_req("v", &me, 10_000, "consumer");
        rejoin.group_instance_id = Some(s("inst"));
        let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, v, &rejoin);
        assert_eq!((r.error_code, r.generation_id), (0, generation), "JoinGroup v{v}");
        assert_eq!(r.members[0].group_instance_id.as_deref(), Some("inst"));
    }
    for v in 3..=5 {
        let mut r = SyncGroupRequest::default();
        r.group_id = GroupId(s("v"));
        r.member_id = s(&me);
        r.group_instance_id = Some(s("inst"));
        r.generation_id = generation;
        let mut a = sync_group_request::SyncGroupRequestAssignment::default();
        a.member_id = s(&me);
        a.assignment = Bytes::from_static(b"x");
        r.assignments = vec![a];
        let resp: SyncGroupResponse = c.call(ApiKey::SyncGroup, v, &r);
        assert_eq!(
            (resp.error_code, &resp.assignment[..]),
            (0, &b"x"[..]),
            "SyncGroup v{v}"
        );
    }
    for v in 3..=4 {
        let mut r = HeartbeatRequest::default();
        r.group_id = GroupId(s("v"));
        r.member_id = s(&me);
        r.group_instance_id = Some(s("inst"));
        r.generation_id = generation;
        let resp: HeartbeatResponse = c.call(ApiKey::Heartbeat, v, &r);
        assert_eq!(resp.error_code, 0, "Heartbeat v{v}");
    }
    for v in 1..=9 {
        let got = fetch_offsets(&mut c, v, "v", "t", &[0]);
        assert_eq!(got, vec![(3, String::new())], "OffsetFetch v{v}");
    }
    for v in 0..=6 {
        let d = describe(&mut c, v, "v");
        assert_eq!(
            (d.error_code, d.group_state.as_str(), d.members.len()),
            (0, "Stable", 1),
            "DescribeGroups v{v}"
        );
        assert_eq!(d.members[0].group_instance_id.is_some(), v >= 4);
    }
    for v in 0..=5 {
        let listed: ListGroupsResponse = c.call(ApiKey::ListGroups, v, &ListGroupsRequest::default());
        assert_eq!(listed.groups.len(), 1, "ListGroups v{v}");
        assert_eq!(
            listed.groups[0].group_state.as_str(),
            if v >= 4 { "Stable" } else { "" }
        );
    }
    // Old versions of JoinGroup join dynamic members without an id round.
    for v in 0..=4 {
        let r: JoinGroupResponse = c.call(
            ApiKey::JoinGroup,
            v,
            &join_req(&format!("old{v}"), "", 10_000, "consumer"),
        );
        let want = if v >= 4 { MEMBER_ID_REQUIRED } else { 0 };
        assert_eq!(r.error_code, want, "JoinGroup v{v}");
        if v < 4 {
            let mut l = LeaveGroupRequest::default();
            l.group_id = GroupId(s(&format!("old{v}")));
            l.member_id = r.member_id.clone();
            let lr: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, 0, &l);
            assert_eq!(lr.error_code, 0);
        }
    }
    for v in 0..=2 {
        let mut r = DeleteGroupsRequest::default();
        r.groups_names = vec![GroupId(s("nope"))];
        let resp: DeleteGroupsResponse = c.call(ApiKey::DeleteGroups, v, &r);
        assert_eq!(resp.results[0].error_code, GROUP_ID_NOT_FOUND);
    }
    let mut lg = LeaveGroupRequest::default();
    lg.group_id = GroupId(s("v"));
    let mut m = MemberIdentity::default();
    m.group_instance_id = Some(s("inst"));
    lg.members = vec![m];
    let lr: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, 5, &lg);
    assert_eq!((lr.error_code, lr.members[0].error_code), (0, 0));
}

/// Size of the offsets log of the one offsets partition, and its segments.
/// A segment the compaction deletes while this looks is not counted.
fn offsets_log(b: &TestBroker) -> (u64, usize) {
    let dir = b.dir.path().join("__consumer_offsets-0");
    let sizes: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .filter_map(|p| match std::fs::metadata(&p) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{}: {e}", p.display()),
        })
        .collect();
    (sizes.iter().sum(), sizes.len())
}

#[test]
fn the_offsets_log_is_compacted_and_replays_to_the_same_offsets() {
    let mut b = TestBroker::start(1, |c| {
        c.set("offsets.topic.num.partitions", "1").unwrap();
        c.set("offsets.topic.segment.bytes", "4096").unwrap();
    });
    let mut c = b.client();
    create_topic(&mut c, "t", 4);
    // 400 commits of ~200 bytes each: ~80 KiB of history for 8 live offsets.
    let meta = "m".repeat(100);
    for i in 0..400i64 {
        for g in ["a", "b"] {
            let p = (i % 4) as i32;
            assert_eq!(commit(&mut c, 2, g, "", -1, &[("t", p, i, &meta)]), vec![0]);
        }
    }
    // Group b loses partition 3's offset; that delete must survive the
    // compaction even though the commits it deletes are rewritten away.
    let mut od = OffsetDeleteRequest::default();
    od.group_id = GroupId(s("b"));
    let mut t = OffsetDeleteRequestTopic::default();
    t.name = TopicName(s("t"));
    let mut part = OffsetDeleteRequestPartition::default();
    part.partition_index = 3;
    t.partitions = vec![part];
    od.topics = vec![t];
    let odr: OffsetDeleteResponse = c.call(ApiKey::OffsetDelete, 0, &od);
    assert_eq!(odr.topics[0].partitions[0].error_code, 0);
    // One more commit rolls the log again after the delete.
    assert_eq!(commit(&mut c, 2, "a", "", -1, &[("t", 0, 1000, &meta)]), vec![0]);

    let deadline = Instant::now() + Duration::from_secs(10);
    let (size, segments) = loop {
        let (size, segments) = offsets_log(&b);
        if segments <= 2 || Instant::now() > deadline {
            break (size, segments);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(segments <= 2, "{segments} segments, {size} bytes");
    assert!(size < 3 * 4096, "{size} bytes in {segments} segments");

    let want_a: Vec<(i64, String)> = vec![
        (1000, meta.clone()),
        (397, meta.clone()),
        (398, meta.clone()),
        (399, meta.clone()),
    ];
    let want_b: Vec<(i64, String)> = vec![
        (396, meta.clone()),
        (397, meta.clone()),
        (398, meta.clone()),
        (-1, String::new()),
    ];
    assert_eq!(fetch_offsets(&mut c, 8, "a", "t", &[0, 1, 2, 3]), want_a);
    assert_eq!(fetch_offsets(&mut c, 8, "b", "t", &[0, 1, 2, 3]), want_b);
    drop(c);
    b.restart();
    let mut c = b.client();
    assert_eq!(fetch_offsets(&mut c, 8, "a", "t", &[0, 1, 2, 3]), want_a);
    assert_eq!(fetch_offsets(&mut c, 8, "b", "t", &[0, 1, 2, 3]), want_b);
    // Commits after a compaction append as usual and win on replay.
    assert_eq!(commit(&mut c, 2, "b", "", -1, &[("t", 3, 5, "")]), vec![0]);
    drop(c);
    b.restart();
    let mut c = b.client();
    assert_eq!(fetch_offsets(&mut c, 8, "b", "t", &[3]), vec![(5, String::new())]);
}

#[test]
fn a_group_whose_last_member_left_stays_empty_until_deleted() {
    let b = start();
    let mut c = b.client();
    let j = join(&mut c, "lonely", 6000);
    assert_eq!(j.error_code, 0);
    let synced = sync(
        &mut c,
        5,
        "lonely",
        &j.member_id,
        j.generation_id,
        &[(&j.member_id, b"a")],
    );
    assert_eq!(synced.error_code, 0);
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = GroupId(s("lonely"));
    let mut m = MemberIdentity::default();
    m.member_id = j.member_id.clone();
    leave.members = vec![m];
    let lr: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, 3, &leave);
    assert_eq!(lr.error_code, 0);
    // No offsets were committed; Kafka still shows the group, Empty.
    let d = describe(&mut c, 5, "lonely");
    assert_eq!((d.error_code, d.group_state.as_str()), (0, "Empty"));
    assert_eq!(d.protocol_type.as_str(), "consumer");
    assert!(d.members.is_empty());
    let listed: ListGroupsResponse = c.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert!(listed.groups.iter().any(|g| g.group_id.as_str() == "lonely"));
    assert_eq!(delete_group(&mut c, "lonely"), 0);
    assert_eq!(describe(&mut c, 5, "lonely").group_state.as_str(), "Dead");
    assert_eq!(delete_group(&mut c, "lonely"), GROUP_ID_NOT_FOUND);
}
