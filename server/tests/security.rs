//! Listeners and their security: every shard accepts on every listener,
//! and each listener's clients are given that listener's endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

#[test]
fn each_listener_advertises_its_own_endpoints() {
    let b = TestBroker::start(2, |c| {
        c.set("listeners", "PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0")
            .unwrap();
        c.set(
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
        )
        .unwrap();
        c.set("advertised.listeners", "INTERNAL://internal.example:19093")
            .unwrap();
        c.set("inter.broker.listener.name", "INTERNAL").unwrap();
    });
    let broker = b.broker.as_ref().unwrap();
    let plain = broker.listener_addr("PLAINTEXT").unwrap();
    let internal = broker.listener_addr("INTERNAL").unwrap();
    assert_ne!(plain, internal);
    assert_eq!(b.addr(), internal, "the inter-broker listener is the broker's address");

    // Through PLAINTEXT: the bound port (it was 0) on the listen address.
    let mut c = Client::connect(plain);
    create_topic(&mut c, "t", 1);
    let m = metadata(&mut c, &["t"]);
    assert_eq!(m.brokers.len(), 1);
    assert_eq!(
        (m.brokers[0].host.as_str(), m.brokers[0].port),
        ("127.0.0.1", i32::from(plain.port()))
    );
    // Through INTERNAL: what advertised.listeners says.
    let mut i = Client::connect(internal);
    let m = metadata(&mut i, &["t"]);
    assert_eq!(
        (m.brokers[0].host.as_str(), m.brokers[0].port),
        ("internal.example", 19093)
    );

    for (client, want) in [
        (&mut c, ("127.0.0.1", i32::from(plain.port()))),
        (&mut i, ("internal.example", 19093)),
    ] {
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_static_str("g");
        let resp: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 3, &req);
        assert_eq!(resp.error_code, 0);
        assert_eq!((resp.host.as_str(), resp.port), want);
        let resp: DescribeClusterResponse = client.call(ApiKey::DescribeCluster, 1, &DescribeClusterRequest::default());
        assert_eq!((resp.brokers[0].host.as_str(), resp.brokers[0].port), want);
    }
    // Both listeners serve the same data.
    let (err, _) = produce(&mut c, 9, "t", 0, 1, records(3, 0));
    assert_eq!(err, 0);
    let (err, end, _) = list_offsets(&mut i, "t", 0, -1);
    assert_eq!((err, end), (0, 3));
}
