//! Property test: random sequences of append (alone and concurrent), read,
//! roll by age, retention, reopen and crash-reopen against an in-memory
//! model of the log; contents must be equal after every step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use sluice_engine::{FlushPolicy, Log, LogConfig, LogError, ReadBound, batch::BatchHeader};

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_len: usize },
    AppendConcurrent { batches: usize, value_len: usize },
    Read { pick: usize, max_bytes: u64 },
    AdvanceClock { ms: u64 },
    Retention { keep_bytes: u64 },
    DeleteRecords { pick: usize },
    Reopen,
    CrashReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..5, 0usize..700).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        2 => (2usize..9, 0usize..300).prop_map(|(batches, value_len)| Op::AppendConcurrent { batches, value_len }),
        3 => (any::<usize>(), 1u64..6000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => (0u64..90_000).prop_map(|ms| Op::AdvanceClock { ms }),
        1 => (0u64..20_000).prop_map(|keep_bytes| Op::Retention { keep_bytes }),
        1 => any::<usize>().prop_map(|pick| Op::DeleteRecords { pick }),
        1 => Just(Op::Reopen),
        1 => Just(Op::CrashReopen),
    ]
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 3000,
        segment_ms: 60_000,
        index_interval_bytes: 512,
        retention_ms: None,
        flush,
        ..LogConfig::default()
    }
}

struct Model {
    /// (base offset, last offset, bytes as stored)
    batches: Vec<(i64, i64, Bytes)>,
    log_start_offset: i64,
}

impl Model {
    fn visible(&self) -> Vec<(i64, Bytes)> {
        self.batches
            .iter()
            .filter(|(_, last, _)| *last >= self.log_start_offset)
            .map(|(b, _, bytes)| (*b, bytes.clone()))
            .collect()
    }
}

async fn run(ops: Vec<Op>, flush: FlushPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let cfg = config(flush);
    let reopen = |dir: &Path, cfg: LogConfig, clock: &ManualClock| {
        let env = clock.env();
        let dir = dir.to_path_buf();
        async move { Log::open(&dir, cfg, env).await.unwrap() }
    };
    let mut log = reopen(dir.path(), cfg.clone(), &clock).await;
    let mut model = Model {
        batches: Vec::new(),
        log_start_offset: 0,
    };
    let mut ts = 0i64;
    for op in ops {
        match op {
            Op::Append { records, value_len } => {
                ts += 1;
                let b = batch(records, value_len, ts);
                let info = log.append_wait(b.clone(), 0, log.default_durability()).await.unwrap();
                model
                    .batches
                    .push((info.base_offset, info.last_offset, expected(b, info.base_offset)));
            }
            Op::AppendConcurrent { batches, value_len } => {
                let mut queued = Vec::new();
                for i in 0..batches {
                    let b = batch(1 + i % 3, value_len, ts + i as i64);
                    let info = log.append(b.clone(), 0).unwrap();
                    queued.push((info.base_offset, info.last_offset, expected(b, info.base_offset)));
                }
                ts += batches as i64;
                log.wait(queued.last().unwrap().1 + 1, log.default_durability())
                    .await
                    .unwrap();
                model.batches.extend(queued);
            }
            Op::Read { pick, max_bytes } => {
                let end = log.log_end_offset();
                let start = log.log_start_offset();
                let offset = start + (pick as i64).rem_euclid(end - start + 1);
                let r = log.read(offset, max_bytes, ReadBound::HighWatermark).unwrap();
                let visible = model.visible();
                match r.slice {
                    None => assert_eq!(offset, end, "empty read only at the log end"),
                    Some(s) => {
                        let got = split_batches(s.to_bytes().unwrap());
                        let first = visible
                            .iter()
                            .position(|(b, bytes)| {
                                *b <= offset && BatchHeader::parse(bytes).unwrap().last_offset() >= offset
                            })
                            .expect("offset is in some batch");
                        assert_eq!(got[..], visible[first..first + got.len()], "read at {offset}");
                        let total: u64 = got.iter().map(|(_, b)| b.len() as u64).sum();
                        assert!(
                            got.len() == 1 || total <= max_bytes,
                            "{total} bytes for a {max_bytes} limit"
                        );
                    }
                }
                let past = log.read(end + 1, 100, ReadBound::HighWatermark);
                assert!(matches!(past, Err(LogError::OffsetOutOfRange { .. })));
            }
            Op::AdvanceClock { ms } => clock.advance(ms),
            Op::Retention { keep_bytes } => {
                log.set_config(LogConfig {
                    retention_bytes: Some(keep_bytes),
                    ..cfg.clone()
                })
                .unwrap();
                log.enforce_retention().unwrap();
                log.set_config(cfg.clone()).unwrap();
                let lso = log.log_start_offset();
                assert!(lso >= model.log_start_offset);
                assert!(
                    lso == model.log_start_offset
                        || model.batches.iter().any(|(b, _, _)| *b == lso)
                        || lso == log.log_end_offset(),
                    "retention moves the start to a batch boundary"
                );
                model.log_start_offset = lso;
            }
            Op::DeleteRecords { pick } => {
                let start = log.log_start_offset();
                let target = start + (pick as i64).rem_euclid(log.high_watermark() - start + 1);
                log.advance_log_start_offset(target).unwrap();
                model.log_start_offset = target;
                assert_eq!(log.log_start_offset(), target);
            }
            Op::Reopen => {
                log.close().await.unwrap();
                drop(log);
                log = reopen(dir.path(), cfg.clone(), &clock).await;
            }
            Op::CrashReopen => {
                // Everything waited for is written; drop without closing.
                log.sync().await.unwrap();
                drop(log);
                log = reopen(dir.path(), cfg.clone(), &clock).await;
            }
        }
        // After DeleteRecords the start may sit inside a batch: reads start
        // at the batch that holds it, as Kafka's do.
        let got = read_all(&log);
        assert_eq!(got, model.visible());
        let want_end = model.batches.last().map_or(0, |(_, last, _)| last + 1);
        assert_eq!(log.log_end_offset(), want_end);
        assert_eq!(
            log.log_start_offset(),
            model.log_start_offset.max(log.segment_bases()[0])
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..40), always in any::<bool>()) {
        let flush = if always { FlushPolicy::Always } else { FlushPolicy::Never };
        compio::runtime::Runtime::new().unwrap().block_on(run(ops, flush));
    }
}
