//! Helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    cell::Cell,
    path::{Path, PathBuf},
    rc::Rc,
};

use bytes::{Bytes, BytesMut};
use sluice_engine::{
    Env, FlushPolicy, Log, LogConfig, ReadBound,
    batch::{self, BatchHeader},
};

/// Small segments and a dense index so a few batches exercise rolls.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    }
}

pub fn batch(records: usize, value_len: usize, ts: i64) -> BytesMut {
    batch::build_simple(records, value_len, ts)
}

/// What the log must return for `b` once it is assigned `base_offset`.
pub fn expected(mut b: BytesMut, base_offset: i64) -> Bytes {
    batch::assign(&mut b, base_offset, 0);
    b.freeze()
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct ManualClock(pub Rc<Cell<u64>>);

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        Self(Rc::new(Cell::new(start_ms)))
    }
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
    pub fn env(&self) -> Env {
        let c = Rc::clone(&self.0);
        Env {
            clock: Some(Rc::new(move || c.get())),
            ..Env::default()
        }
    }
}

/// The `.log` file of the segment that starts at `base`.
pub fn segment_file(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub async fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, config, Env::default()).await.expect("open log")
}

/// Splits a run of whole batches into (base offset, bytes).
pub fn split_batches(mut bytes: Bytes) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let h = BatchHeader::parse(&bytes).expect("header");
        let len = h.total_len().expect("length");
        let base = h.base_offset();
        out.push((base, bytes.split_to(len)));
    }
    out
}

/// Every batch from the log start to the log end, through the read path.
pub fn read_all(log: &Log) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let r = log.read(offset, 64 * 1024, ReadBound::LogEnd).expect("read");
        let Some(slice) = r.slice else { break };
        let batches = split_batches(slice.to_bytes().expect("slice bytes"));
        assert!(!batches.is_empty(), "a slice holds at least one batch");
        for (base, b) in batches {
            let last = BatchHeader::parse(&b).unwrap().last_offset();
            offset = last + 1;
            out.push((base, b));
        }
    }
    out
}

/// Appends `n` batches of 3 records each, waiting for each to be written,
/// and returns what the log must hold.
pub async fn append_n(log: &Log, n: usize, value_len: usize, ts: i64) -> Vec<(i64, Bytes)> {
    let mut model = Vec::new();
    for i in 0..n {
        let b = batch(3, value_len, ts + i as i64);
        let info = log
            .append_wait(b.clone(), 0, log.default_durability())
            .await
            .expect("append");
        model.push((info.base_offset, expected(b, info.base_offset)));
    }
    model
}
