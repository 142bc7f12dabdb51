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

/// A broker with a PLAINTEXT listener (for administration) and a
/// SASL_PLAINTEXT one with PLAIN's user `alice`.
fn sasl_broker(tweak: impl FnOnce(&mut sluice::BrokerConfig)) -> (TestBroker, std::net::SocketAddr) {
    let b = TestBroker::start(1, |c| {
        c.set("listeners", "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0")
            .unwrap();
        c.set(
            "listener.name.sasl_plaintext.plain.sasl.jaas.config",
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";"#,
        )
        .unwrap();
        c.set("connection.failed.authentication.delay.ms", "300").unwrap();
        tweak(c);
    });
    let addr = b.broker.as_ref().unwrap().listener_addr("SASL_PLAINTEXT").unwrap();
    (b, addr)
}

fn handshake(c: &mut Client, version: i16, mechanism: &str) -> SaslHandshakeResponse {
    let mut req = SaslHandshakeRequest::default();
    req.mechanism = StrBytes::from_string(mechanism.to_string());
    c.call(ApiKey::SaslHandshake, version, &req)
}

fn authenticate(c: &mut Client, version: i16, token: &[u8]) -> SaslAuthenticateResponse {
    let mut req = SaslAuthenticateRequest::default();
    req.auth_bytes = bytes::Bytes::copy_from_slice(token);
    c.call(ApiKey::SaslAuthenticate, version, &req)
}

#[test]
fn plain_authenticates_and_nothing_is_served_before_it() {
    let (b, addr) = sasl_broker(|c| c.set("connections.max.reauth.ms", "60000").unwrap());
    create_topic(&mut b.client(), "t", 1);

    // A request before authentication closes the connection unanswered.
    let mut c = Client::connect(addr);
    let (_, frame) = c.frame(ApiKey::Metadata, 12, &MetadataRequest::default());
    c.send_raw(&frame);
    assert!(c.read_frame().is_none(), "metadata before authentication is not served");

    // ApiVersions is served; an unknown mechanism is refused with the list.
    let mut c = Client::connect(addr);
    let v: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(v.error_code, 0);
    let h = handshake(&mut c, 1, "GSSAPI");
    assert_eq!(h.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    let names: Vec<&str> = h.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(names, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert!(c.is_closed());

    // A wrong password: SASL_AUTHENTICATION_FAILED after the delay, then
    // the connection closes.
    let mut c = Client::connect(addr);
    assert_eq!(handshake(&mut c, 1, "PLAIN").error_code, 0);
    let started = std::time::Instant::now();
    let r = authenticate(&mut c, 2, b"\0alice\0wrong");
    assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert!(r.error_message.unwrap().contains("Invalid username or password"));
    assert!(c.is_closed());

    // The right one: served, with the session's lifetime.
    let mut c = Client::connect(addr);
    assert_eq!(handshake(&mut c, 1, "PLAIN").error_code, 0);
    let r = authenticate(&mut c, 1, b"\0alice\0alice-secret");
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 60_000));
    let m = metadata(&mut c, &["t"]);
    assert_eq!(m.topics[0].error_code, 0);
    assert_eq!(
        m.brokers[0].port,
        i32::from(addr.port()),
        "the SASL listener's endpoint"
    );
    let (err, _) = produce(&mut c, 9, "t", 0, 1, records(2, 0));
    assert_eq!(err, 0);
    // Re-authentication as the same user keeps the connection.
    assert_eq!(handshake(&mut c, 1, "PLAIN").error_code, 0);
    assert_eq!(authenticate(&mut c, 2, b"\0alice\0alice-secret").error_code, 0);
    assert_eq!(metadata(&mut c, &["t"]).topics[0].error_code, 0);

    // SASL requests on the PLAINTEXT listener: ILLEGAL_SASL_STATE.
    let mut p = b.client();
    assert_eq!(handshake(&mut p, 1, "PLAIN").error_code, 34);
}

#[test]
fn v0_handshakes_take_raw_tokens() {
    let (_b, addr) = sasl_broker(|_| {});
    let mut c = Client::connect(addr);
    assert_eq!(handshake(&mut c, 0, "PLAIN").error_code, 0);
    let token = b"\0alice\0alice-secret";
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(token);
    c.send_raw(&frame);
    let answer = c.read_frame().expect("an empty token back");
    assert!(answer.is_empty());
    assert_eq!(metadata(&mut c, &[]).brokers.len(), 1);

    let mut c = Client::connect(addr);
    assert_eq!(handshake(&mut c, 0, "PLAIN").error_code, 0);
    let token = b"\0alice\0nope";
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(token);
    c.send_raw(&frame);
    assert!(c.read_frame().is_none(), "a failed raw exchange closes the connection");
}

fn scram_upsert(user: &str, mechanism: i8, password: &str, iterations: i32) -> AlterUserScramCredentialsRequest {
    let m = sluice_metadata::security::ScramMechanism::from_id(mechanism)
        .unwrap_or(sluice_metadata::security::ScramMechanism::Sha256);
    let salt = sluice::security::scram::random_bytes(16);
    let salted = sluice::security::scram::salted_password(m, password.as_bytes(), &salt, iterations.max(1) as u32);
    let mut u = alter_user_scram_credentials_request::ScramCredentialUpsertion::default();
    u.name = StrBytes::from_string(user.into());
    u.mechanism = mechanism;
    u.iterations = iterations;
    u.salt = salt.into();
    u.salted_password = salted.into();
    let mut req = AlterUserScramCredentialsRequest::default();
    req.upsertions = vec![u];
    req
}

fn scram_login(addr: std::net::SocketAddr, user: &str, password: &str) -> (Client, SaslAuthenticateResponse) {
    let mut c = Client::connect(addr);
    assert_eq!(handshake(&mut c, 1, "SCRAM-SHA-512").error_code, 0);
    let m = sluice_metadata::security::ScramMechanism::Sha512;
    let mut client = sluice::security::scram::ScramClient::new(m, user, password);
    let first = authenticate(&mut c, 2, &client.first());
    assert_eq!(first.error_code, 0, "{:?}", first.error_message);
    let last = client.last(&first.auth_bytes).unwrap();
    let fin = authenticate(&mut c, 2, &last);
    if fin.error_code == 0 {
        client.verify(&fin.auth_bytes).unwrap();
    }
    (c, fin)
}

#[test]
fn scram_credentials_are_managed_through_the_api_and_authenticate() {
    let (b, addr) = sasl_broker(|_| {});
    let mut admin = b.client();
    let r: AlterUserScramCredentialsResponse = admin.call(
        ApiKey::AlterUserScramCredentials,
        0,
        &scram_upsert("bob", 2, "bob-pw", 8192),
    );
    assert_eq!(r.results.len(), 1);
    assert_eq!(r.results[0].error_code, 0, "{:?}", r.results[0].error_message);
    // Kafka's refusals.
    let r: AlterUserScramCredentialsResponse =
        admin.call(ApiKey::AlterUserScramCredentials, 0, &scram_upsert("bob", 2, "x", 100));
    assert_eq!(r.results[0].error_code, 93, "UNACCEPTABLE_CREDENTIAL");
    let r: AlterUserScramCredentialsResponse =
        admin.call(ApiKey::AlterUserScramCredentials, 0, &scram_upsert("bob", 9, "x", 4096));
    assert_eq!(r.results[0].error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    let mut twice = scram_upsert("carol", 1, "x", 4096);
    twice.upsertions.push(twice.upsertions[0].clone());
    let r: AlterUserScramCredentialsResponse = admin.call(ApiKey::AlterUserScramCredentials, 0, &twice);
    assert_eq!(r.results[0].error_code, 92, "DUPLICATE_RESOURCE");
    let mut gone = AlterUserScramCredentialsRequest::default();
    let mut d = alter_user_scram_credentials_request::ScramCredentialDeletion::default();
    d.name = StrBytes::from_static_str("nobody");
    d.mechanism = 1;
    gone.deletions = vec![d];
    let r: AlterUserScramCredentialsResponse = admin.call(ApiKey::AlterUserScramCredentials, 0, &gone);
    assert_eq!(r.results[0].error_code, 91, "RESOURCE_NOT_FOUND");

    // Described without secrets.
    let d: DescribeUserScramCredentialsResponse = admin.call(
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default(),
    );
    assert_eq!(d.results.len(), 1);
    assert_eq!(d.results[0].user.as_str(), "bob");
    assert_eq!(
        (
            d.results[0].credential_infos[0].mechanism,
            d.results[0].credential_infos[0].iterations
        ),
        (2, 8192)
    );

    // Authenticates with the password; fails without it, and for a user
    // that does not exist the same way.
    let (mut c, fin) = scram_login(addr, "bob", "bob-pw");
    assert_eq!(fin.error_code, 0);
    assert_eq!(metadata(&mut c, &[]).brokers.len(), 1);
    for (user, pw) in [("bob", "wrong"), ("mallory", "bob-pw")] {
        let (mut c, fin) = scram_login(addr, user, pw);
        assert_eq!(fin.error_code, 58, "{user}");
        assert!(c.is_closed());
    }

    // Removed: no longer authenticates; survives a restart as removed.
    let mut del = AlterUserScramCredentialsRequest::default();
    let mut d = alter_user_scram_credentials_request::ScramCredentialDeletion::default();
    d.name = StrBytes::from_static_str("bob");
    d.mechanism = 2;
    del.deletions = vec![d];
    let r: AlterUserScramCredentialsResponse = admin.call(ApiKey::AlterUserScramCredentials, 0, &del);
    assert_eq!(r.results[0].error_code, 0);
    assert_eq!(scram_login(addr, "bob", "bob-pw").1.error_code, 58);
}

#[test]
fn scram_credentials_survive_a_restart() {
    let (mut b, _) = sasl_broker(|_| {});
    let r: AlterUserScramCredentialsResponse = b.client().call(
        ApiKey::AlterUserScramCredentials,
        0,
        &scram_upsert("dave", 2, "dave-pw", 4096),
    );
    assert_eq!(r.results[0].error_code, 0);
    b.restart();
    let addr = b.broker.as_ref().unwrap().listener_addr("SASL_PLAINTEXT").unwrap();
    assert_eq!(scram_login(addr, "dave", "dave-pw").1.error_code, 0);
}

/// A broker with an authorizer: PLAIN users `admin` (a super user),
/// `alice` and `bob` on the SASL listener; the PLAINTEXT listener's
/// clients are `User:ANONYMOUS`.
fn acl_broker() -> (TestBroker, std::net::SocketAddr) {
    sasl_broker(|c| {
        c.set(
            "listener.name.sasl_plaintext.plain.sasl.jaas.config",
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="a" user_alice="a" user_bob="b";"#,
        )
        .unwrap();
        c.set(
            "authorizer.class.name",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        )
        .unwrap();
        c.set("super.users", "User:admin").unwrap();
    })
}

fn login(addr: std::net::SocketAddr, user: &str, password: &str) -> Client {
    let mut c = Client::connect(addr);
    assert_eq!(handshake(&mut c, 1, "PLAIN").error_code, 0);
    let r = authenticate(&mut c, 2, format!("\0{user}\0{password}").as_bytes());
    assert_eq!(r.error_code, 0, "{user}");
    c
}

fn creation(rt: i8, name: &str, pattern: i8, principal: &str, op: i8, perm: i8) -> create_acls_request::AclCreation {
    let mut a = create_acls_request::AclCreation::default();
    a.resource_type = rt;
    a.resource_name = StrBytes::from_string(name.into());
    a.resource_pattern_type = pattern;
    a.principal = StrBytes::from_string(principal.into());
    a.host = StrBytes::from_static_str("*");
    a.operation = op;
    a.permission_type = perm;
    a
}

const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const READ: i8 = 3;
const ALL: i8 = 2;
const ALLOW: i8 = 3;
const DENY: i8 = 2;

#[test]
fn acls_decide_what_each_principal_may_do() {
    let (_b, addr) = acl_broker();
    let mut admin = login(addr, "admin", "a");
    for t in ["alice-in", "alice-secret", "other"] {
        assert_eq!(create_topic(&mut admin, t, 1).topics[0].error_code, 0);
    }
    let mut req = CreateAclsRequest::default();
    req.creations = vec![
        creation(TOPIC, "alice-", PREFIXED, "User:alice", ALL, ALLOW),
        creation(TOPIC, "alice-secret", LITERAL, "User:alice", READ, DENY),
        creation(GROUP, "g", LITERAL, "User:alice", READ, ALLOW),
    ];
    let r: CreateAclsResponse = admin.call(ApiKey::CreateAcls, 3, &req);
    assert!(r.results.iter().all(|r| r.error_code == 0), "{:?}", r.results);

    let mut alice = login(addr, "alice", "a");
    // Metadata lists what alice may describe; a named topic she may not is
    // TOPIC_AUTHORIZATION_FAILED.
    let every = MetadataRequest::default().with_topics(None);
    let all: MetadataResponse = alice.call(ApiKey::Metadata, 12, &every);
    let mut names: Vec<String> = all
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["alice-in", "alice-secret"],
        "DENY READ leaves DESCRIBE from ALL"
    );
    assert_eq!(metadata(&mut alice, &["other"]).topics[0].error_code, 29);
    // Produce: allowed by the prefixed ACL; refused elsewhere.
    assert_eq!(produce(&mut alice, 9, "alice-in", 0, -1, records(2, 0)).0, 0);
    assert_eq!(produce(&mut alice, 9, "other", 0, -1, records(2, 0)).0, 29);
    // Fetch: the DENY READ wins over the prefixed ALLOW ALL.
    let id = topic_id(&mut admin, "alice-secret");
    let f: FetchResponse = alice.call(ApiKey::Fetch, 13, &fetch_req("alice-secret", id, 0, 0, 0));
    assert_eq!(f.responses[0].partitions[0].error_code, 29);
    let id = topic_id(&mut admin, "alice-in");
    let f: FetchResponse = alice.call(ApiKey::Fetch, 13, &fetch_req("alice-in", id, 0, 0, 0));
    assert_eq!(f.responses[0].partitions[0].error_code, 0);
    // Groups: READ on `g` only.
    let mut fc = FindCoordinatorRequest::default();
    fc.key = StrBytes::from_static_str("g");
    let r: FindCoordinatorResponse = alice.call(ApiKey::FindCoordinator, 3, &fc);
    assert_eq!(r.error_code, 0);
    fc.key = StrBytes::from_static_str("h");
    let r: FindCoordinatorResponse = alice.call(ApiKey::FindCoordinator, 3, &fc);
    assert_eq!(r.error_code, 30, "GROUP_AUTHORIZATION_FAILED");
    // Creating topics, ACLs and users needs the cluster.
    assert_eq!(create_topic(&mut alice, "not-hers", 1).topics[0].error_code, 29);
    let r: CreateAclsResponse = alice.call(ApiKey::CreateAcls, 3, &req);
    assert_eq!(r.results[0].error_code, 31, "CLUSTER_AUTHORIZATION_FAILED");

    // Bob has no ACL: nothing is visible, nothing is written.
    let mut bob = login(addr, "bob", "b");
    let all: MetadataResponse = bob.call(ApiKey::Metadata, 12, &every);
    assert!(all.topics.is_empty());
    let all: MetadataResponse = admin.call(ApiKey::Metadata, 12, &every);
    assert!(all.topics.len() >= 3, "the super user sees every topic");
    assert_eq!(produce(&mut bob, 9, "alice-in", 0, -1, records(1, 0)).0, 29);

    // DescribeAcls with a MATCH filter: the ACLs that apply to a topic.
    let mut d = DescribeAclsRequest::default();
    d.resource_type_filter = TOPIC;
    d.resource_name_filter = Some(StrBytes::from_static_str("alice-secret"));
    d.pattern_type_filter = 2;
    d.principal_filter = None;
    d.host_filter = None;
    d.operation = 1;
    d.permission_type = 1;
    let r: DescribeAclsResponse = admin.call(ApiKey::DescribeAcls, 3, &d);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.resources.len(), 2, "{:?}", r.resources);
    // DeleteAcls: the DENY goes; alice reads the topic.
    let mut del = DeleteAclsRequest::default();
    let mut f = delete_acls_request::DeleteAclsFilter::default();
    f.resource_type_filter = TOPIC;
    f.resource_name_filter = Some(StrBytes::from_static_str("alice-secret"));
    f.pattern_type_filter = LITERAL;
    f.principal_filter = None;
    f.host_filter = None;
    f.operation = 1;
    f.permission_type = DENY;
    del.filters = vec![f];
    let r: DeleteAclsResponse = admin.call(ApiKey::DeleteAcls, 3, &del);
    assert_eq!(r.filter_results[0].matching_acls.len(), 1);
    let id = topic_id(&mut admin, "alice-secret");
    let f: FetchResponse = alice.call(ApiKey::Fetch, 13, &fetch_req("alice-secret", id, 0, 0, 0));
    assert_eq!(f.responses[0].partitions[0].error_code, 0);

    // The anonymous PLAINTEXT client has no ACL either.
    let mut anon = _b.client();
    assert_eq!(produce(&mut anon, 9, "alice-in", 0, -1, records(1, 0)).0, 29);
}

#[test]
fn acl_apis_without_an_authorizer_answer_security_disabled() {
    let b = TestBroker::start(1, |_| {});
    let mut c = b.client();
    let mut req = CreateAclsRequest::default();
    req.creations = vec![creation(TOPIC, "t", LITERAL, "User:a", READ, ALLOW)];
    let r: CreateAclsResponse = c.call(ApiKey::CreateAcls, 3, &req);
    assert_eq!(r.results[0].error_code, 54, "SECURITY_DISABLED");
    let r: DescribeAclsResponse = c.call(ApiKey::DescribeAcls, 3, &DescribeAclsRequest::default());
    assert_eq!(r.error_code, 54);
}

/// Three in-process brokers whose inter-broker listener is
/// SASL_PLAINTEXT with an authorizer: followers fetch (and replicate an
/// acks=all write) as the brokers' own user, a super user; an anonymous
/// client cannot fetch as a replica.
#[test]
fn brokers_replicate_over_a_sasl_inter_broker_listener() {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let voters = (1..=3)
        .map(|i| format!("{i}@127.0.0.1:{}", free_port()))
        .collect::<Vec<_>>()
        .join(",");
    let brokers: Vec<TestBroker> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=3usize)
            .map(|i| {
                let (voters, (internal, client)) = (voters.clone(), ports[i - 1]);
                s.spawn(move || {
                    TestBroker::start(1, |c| {
                        for (k, v) in [
                            (
                                "listeners",
                                format!("INTERNAL://127.0.0.1:{internal},CLIENT://127.0.0.1:{client}"),
                            ),
                            (
                                "listener.security.protocol.map",
                                "INTERNAL:SASL_PLAINTEXT,CLIENT:PLAINTEXT".into(),
                            ),
                            ("inter.broker.listener.name", "INTERNAL".into()),
                            (
                                "listener.name.internal.plain.sasl.jaas.config",
                                r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="broker-secret" user_broker="broker-secret";"#.into(),
                            ),
                            (
                                "authorizer.class.name",
                                "org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
                            ),
                            ("super.users", "User:broker".into()),
                            ("node.id", i.to_string()),
                            ("controller.quorum.voters", voters),
                            ("broker.session.timeout.ms", "3000".into()),
                            ("broker.heartbeat.interval.ms", "500".into()),
                            ("offsets.topic.num.partitions", "1".into()),
                        ] {
                            c.set(k, &v).unwrap();
                        }
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let internal = brokers[0].broker.as_ref().unwrap().listener_addr("INTERNAL").unwrap();
    let mut admin = login(internal, "broker", "broker-secret");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while metadata(&mut admin, &[]).brokers.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "three live brokers");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let created = create_replicated_topic(&mut admin, "replicated", 1, 3);
    assert_eq!(created.topics[0].error_code, 0, "{:?}", created.topics[0].error_message);
    // The ISR fills only if every follower's fetch authenticated.
    let (leader, isr) = loop {
        let md = metadata(&mut admin, &["replicated"]);
        let p = &md.topics[0].partitions[0];
        if p.leader_id.0 > 0 && p.isr_nodes.len() == 3 {
            break (p.leader_id.0, p.isr_nodes.len());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ISR did not fill: {:?}",
            p.isr_nodes
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(isr, 3);
    let to_leader = brokers[usize::try_from(leader - 1).unwrap()]
        .broker
        .as_ref()
        .unwrap()
        .listener_addr("INTERNAL")
        .unwrap();
    let mut c = login(to_leader, "broker", "broker-secret");
    let (err, _) = produce(&mut c, 9, "replicated", 0, -1, records(5, 0));
    assert_eq!(err, 0, "acks=all across three replicas");
    // An anonymous client fetching as replica 2: no CLUSTER_ACTION.
    let client = brokers[usize::try_from(leader - 1).unwrap()]
        .broker
        .as_ref()
        .unwrap()
        .listener_addr("CLIENT")
        .unwrap();
    let mut anon = Client::connect(client);
    let id = topic_id(&mut c, "replicated");
    let mut req = fetch_req("replicated", id, 0, 0, 0);
    req.replica_state.replica_id = BrokerId(2);
    req.replica_state.replica_epoch = 1;
    let f: FetchResponse = anon.call(ApiKey::Fetch, 15, &req);
    assert_eq!(
        f.responses[0].partitions[0].error_code, 29,
        "TOPIC_AUTHORIZATION_FAILED"
    );
}
