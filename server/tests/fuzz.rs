//! Fuzzing the request decoders and handlers in process: mutated frames,
//! seeded from real clients' captured requests (tests/fuzz/corpus) and a
//! default request of every supported API and version, go straight to
//! `handlers::dispatch` on the broker's shards. No frame may panic a
//! handler; after every 1,000 frames a fresh connection must be answered
//! within 1 s and a connection opened at the start must still work.
//!
//! `FUZZ_FRAMES` (default 20,000) and `FUZZ_SEED` (default: the time) set
//! the run; `FUZZ_CHECK_EVERY` (default 1,000) how many frames go between
//! checks; `scripts/fuzz.sh` runs it for a given time. A failure prints
//! the seed and the frames sent since the last check (rerun the seed with
//! `FUZZ_CHECK_EVERY=1` to find the one that stalls).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use futures_util::FutureExt;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use sluice::handlers::{self, Outcome};
use sluice_tools::fuzz::{Mutator, default_frames, load_corpus};

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

fn answered_within(c: &mut Client, limit: Duration) -> bool {
    c.stream.set_read_timeout(Some(limit)).unwrap();
    let (corr, frame) = c.frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    c.send_raw(&frame);
    let Some(mut resp) = c.read_frame() else { return false };
    let header = ResponseHeader::decode(&mut resp, 0).unwrap();
    header.correlation_id == corr
}

#[derive(Default)]
struct Tally {
    respond: u64,
    silent: u64,
    close: u64,
    panics: Vec<String>,
}

#[test]
fn mutated_requests_never_panic_or_stall_a_shard() {
    let frames = env_u64("FUZZ_FRAMES").unwrap_or(20_000);
    let check_every = env_u64("FUZZ_CHECK_EVERY").unwrap_or(1000).max(1);
    let seed = env_u64("FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("fuzz: {frames} frames, FUZZ_SEED={seed}");
    let b = TestBroker::start(2, |c| {
        c.set("sluice.fetch.max.wait.ms", "50").unwrap();
        c.set("group.initial.rebalance.delay.ms", "0").unwrap();
        c.set("group.max.session.timeout.ms", "6000").unwrap();
        c.set("offsets.topic.num.partitions", "4").unwrap();
        c.set("num.partitions", "2").unwrap();
        // Mutated CreatePartitions ask for up to 100,000 partitions: real
        // work, not a fault, and not what this test is after.
        c.set("sluice.max.partitions", "2000").unwrap();
    });
    let mut c = b.client();
    // Topics the captured requests name, so mutations reach the data path.
    for t in ["seed-a", "seed-b", "seed-kp"] {
        create_topic(&mut c, t, 3);
        produce(&mut c, 9, t, 0, 1, records(5, 1));
    }
    let mut idle = b.client();
    assert!(answered_within(&mut idle, Duration::from_secs(1)));

    let corpus_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus");
    let mut seeds = load_corpus(&corpus_dir).unwrap();
    let apis: Vec<(i16, i16, i16)> = handlers::APIS
        .iter()
        .map(|a| (a.key as i16, a.min_version, a.max_version))
        .collect();
    seeds.extend(default_frames(&apis));
    let mut mutator = Mutator::new(seeds, seed);

    let tally = Arc::new(Mutex::new(Tally::default()));
    let broker = b.broker.as_ref().unwrap();
    let start = Instant::now();
    let mut recent: Vec<String> = Vec::new();
    for i in 0..frames {
        let frame = mutator.next_frame();
        if recent.len() as u64 >= check_every {
            recent.clear();
        }
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        recent.push(hex.clone());
        let tally_here = tally.clone();
        let sasl = i % 3 == 0;
        broker.run_on_shard(
            (i % 2) as usize,
            Box::new(move |shard| {
                let shard = shard.clone();
                compio::runtime::spawn(async move {
                    let run = handlers::dispatch(
                        shard,
                        BytesMut::from(&frame[..]),
                        // Every third frame as if on a SASL listener, so
                        // SaslHandshake and SaslAuthenticate reach their
                        // session logic.
                        Rc::new(handlers::Conn::new(
                            "/127.0.0.1".into(),
                            "PLAINTEXT".into(),
                            if sasl {
                                sluice::config::SecurityProtocol::SaslPlaintext
                            } else {
                                sluice::config::SecurityProtocol::Plaintext
                            },
                        )),
                    );
                    let outcome = AssertUnwindSafe(run).catch_unwind().await;
                    let mut t = tally_here.lock().unwrap();
                    match outcome {
                        Ok(Outcome::Respond(_)) => t.respond += 1,
                        Ok(Outcome::Silent) => t.silent += 1,
                        Ok(Outcome::Close(_)) => t.close += 1,
                        Ok(Outcome::RespondThenClose(..)) => {
                            t.respond += 1;
                            t.close += 1;
                        }
                        Err(_) => t.panics.push(hex),
                    }
                })
                .detach();
            }),
        );
        if (i + 1).is_multiple_of(check_every) {
            let mut fresh = b.client();
            assert!(
                answered_within(&mut fresh, Duration::from_secs(1)),
                "FUZZ_SEED={seed}: a fresh connection was not answered within 1 s after {} frames; the last {} frames: {recent:?}",
                i + 1,
                recent.len()
            );
            assert!(
                answered_within(&mut idle, Duration::from_secs(1)),
                "FUZZ_SEED={seed}: the idle connection stopped working after {} frames; the last {} frames: {recent:?}",
                i + 1,
                recent.len()
            );
            let t = tally.lock().unwrap();
            assert!(
                t.panics.is_empty(),
                "FUZZ_SEED={seed}: frames that panicked: {:?}",
                t.panics
            );
        }
    }
    // Let the long polls and group waits of the last frames end.
    std::thread::sleep(Duration::from_millis(300));
    let t = tally.lock().unwrap();
    assert!(
        t.panics.is_empty(),
        "FUZZ_SEED={seed}: frames that panicked: {:?}",
        t.panics
    );
    eprintln!(
        "fuzz: {frames} frames in {:.1} s: {} answered, {} silent, {} closed, 0 panics",
        start.elapsed().as_secs_f64(),
        t.respond,
        t.silent,
        t.close
    );
    assert!(t.respond > frames / 20, "mutations still reach the handlers");
    assert!(answered_within(&mut c, Duration::from_secs(1)));
}
