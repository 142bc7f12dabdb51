//! Three in-process brokers forming a cluster on loopback: what a broker
//! that has handed its leadership over tells the producers still sending
//! to it (Kafka's KIP-951), while it lingers before it stops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::*;

const NOT_LEADER_OR_FOLLOWER: i16 = 6;

fn leader_of(c: &mut Client, topic: &str) -> Option<(i32, i32, usize)> {
    let md = metadata(c, &[topic]);
    let t = md.topics.first()?;
    let p = t.partitions.first()?;
    (t.error_code == 0 && p.leader_id.0 >= 0).then_some((p.leader_id.0, p.leader_epoch, p.isr_nodes.len()))
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_broker_that_handed_its_leadership_over_points_producers_and_consumers_to_the_new_leader() {
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = (1..=3)
        .map(|i| format!("{i}@127.0.0.1:{}", free_port()))
        .collect::<Vec<_>>()
        .join(",");
    // Started side by side: each waits for a quorum leader, which needs a
    // majority of them.
    let mut brokers: Vec<Option<TestBroker>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=3usize)
            .map(|i| {
                let (voters, port) = (voters.clone(), client_ports[i - 1]);
                s.spawn(move || {
                    TestBroker::start(1, |c| {
                        for (k, v) in [
                            ("listeners", format!("127.0.0.1:{port}")),
                            ("node.id", i.to_string()),
                            ("controller.quorum.voters", voters),
                            ("broker.session.timeout.ms", "3000".into()),
                            ("broker.heartbeat.interval.ms", "500".into()),
                            ("offsets.topic.num.partitions", "1".into()),
                            // A window wide enough to look at what it
                            // answers (the calls below take milliseconds).
                            ("sluice.shutdown.linger.ms", "4000".into()),
                        ] {
                            c.set(k, &v).unwrap();
                        }
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| Some(h.join().unwrap())).collect()
    });
    let mut c1 = brokers[0].as_ref().unwrap().client();
    wait("three live brokers", || {
        (metadata(&mut c1, &[]).brokers.len() == 3).then_some(())
    });
    let created = create_replicated_topic(&mut c1, "handover", 1, 3);
    assert_eq!(created.topics[0].error_code, 0, "{:?}", created.topics[0].error_message);
    let id = topic_id(&mut c1, "handover");
    let (old, old_epoch, _) = wait("a leader with all three in its ISR", || {
        leader_of(&mut c1, "handover").filter(|(_, _, isr)| *isr == 3)
    });
    let old_index = usize::try_from(old - 1).unwrap();
    let mut to_old = brokers[old_index].as_ref().unwrap().client();
    assert_eq!(produce(&mut to_old, 10, "handover", 0, -1, records(3, 1)).0, 0);

    // SIGTERM's path: hand leadership over, linger, stop.
    let leaving = brokers[old_index].take().unwrap();
    let stopper = std::thread::spawn(move || {
        let mut leaving = leaving;
        leaving.broker.take().unwrap().shutdown()
    });
    let resp = wait("NOT_LEADER_OR_FOLLOWER from the old leader", || {
        let resp: ProduceResponse = to_old.call(ApiKey::Produce, 10, &produce_req("handover", 0, -1, records(1, 2)));
        (resp.responses[0].partition_responses[0].error_code == NOT_LEADER_OR_FOLLOWER).then_some(resp)
    });
    let p = &resp.responses[0].partition_responses[0];
    let new = p.current_leader.leader_id.0;
    assert!(new != old && (1..=3).contains(&new), "current leader {new}, old {old}");
    assert!(p.current_leader.leader_epoch > old_epoch);
    let endpoint = resp
        .node_endpoints
        .iter()
        .find(|e| e.node_id.0 == new)
        .expect("the new leader's endpoint");
    let new_index = usize::try_from(new - 1).unwrap();
    assert_eq!(
        (&*endpoint.host, endpoint.port),
        ("127.0.0.1", i32::from(client_ports[new_index]))
    );
    // The endpoint is right: the new leader takes the write.
    let mut to_new = brokers[new_index].as_ref().unwrap().client();
    let new_leader = wait("the new leader taking writes", || {
        let (code, offset) = produce(&mut to_new, 10, "handover", 0, -1, records(1, 3));
        (code == 0).then_some(offset)
    });
    assert!(
        new_leader >= 3,
        "offset {new_leader} after the 3 records written before"
    );
    // Old-version producers get the error without the hint.
    let resp: ProduceResponse = to_old.call(ApiKey::Produce, 9, &produce_req("handover", 0, -1, records(1, 4)));
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code,
        NOT_LEADER_OR_FOLLOWER
    );
    // The same hint in Fetch: v16+ with the endpoint, v12..15 without.
    let resp: FetchResponse = to_old.call(ApiKey::Fetch, 16, &fetch_req("handover", id, 0, 0, 0));
    let f = &resp.responses[0].partitions[0];
    assert_eq!(f.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(f.current_leader.leader_id.0, new);
    assert!(f.current_leader.leader_epoch >= p.current_leader.leader_epoch);
    let endpoint = resp
        .node_endpoints
        .iter()
        .find(|e| e.node_id.0 == new)
        .expect("the new leader's endpoint in the fetch answer");
    assert_eq!(
        (&*endpoint.host, endpoint.port),
        ("127.0.0.1", i32::from(client_ports[new_index]))
    );
    let resp: FetchResponse = to_old.call(ApiKey::Fetch, 13, &fetch_req("handover", id, 0, 0, 0));
    let f = &resp.responses[0].partitions[0];
    assert_eq!(
        (f.error_code, f.current_leader.leader_id.0),
        (NOT_LEADER_OR_FOLLOWER, new)
    );
    assert!(resp.node_endpoints.is_empty());
    stopper.join().unwrap();
    let rest: Vec<_> = brokers
        .iter_mut()
        .flatten()
        .map(|b| {
            let broker = b.broker.take().unwrap();
            std::thread::spawn(move || broker.shutdown())
        })
        .collect();
    for r in rest {
        r.join().unwrap();
    }
}
