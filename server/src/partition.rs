//! One partition replica on the shard that owns it: its log, its
//! idempotent-producer table, and the append rules Produce relies on. Today
//! every replica is a leader (one node); this is the home the leader and
//! follower replica logic will share.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use bytes::BytesMut;
use sluice_engine::{Log, batch};

use crate::error_codes::{self, ErrorCode};
use crate::producer_state::{BatchRange, ProducerStates, Verdict};
use crate::protocol::produce::split_batches;

/// One partition, owned by the shard the placement table names. Lives in
/// that shard's partition table and is touched only on its thread.
#[derive(Debug)]
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub log: Log,
    pub producers: RefCell<ProducerStates>,
    /// When its shard last read or appended to it (`Shard::touch`): the
    /// least recently used partitions release their files first.
    pub(crate) last_used: Cell<u64>,
}

/// Offsets a produce to one partition got: the first batch's base offset
/// (a duplicate's original one) and the end offset to wait for (0 when
/// nothing new was appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub end_offset: i64,
}

/// Why a produce to one partition was refused, with Kafka's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ErrorCode,
    pub message: String,
}

impl Refused {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl Partition {
    pub fn new(topic: Arc<str>, index: i32, log: Log, producers: ProducerStates, last_used: u64) -> Self {
        Self {
            topic,
            index,
            log,
            producers: RefCell::new(producers),
            last_used: Cell::new(last_used),
        }
    }

    /// Appends the record batches of one partition of a Produce request,
    /// synchronously and in order: every batch is validated first when
    /// there are several (all or nothing), duplicates of an idempotent
    /// producer's recent batches answer their original offset, sequence
    /// gaps and stale epochs are refused, and the producer table records
    /// each batch appended. Waiting for durability is the caller's.
    pub fn append_records(&self, records: BytesMut) -> Result<Appended, Refused> {
        let batches = split_batches(records);
        let max = self.log.config().max_batch_bytes as usize;
        if batches.len() > 1 {
            for b in &batches {
                if let Err(e) = batch::validate(b, max) {
                    return Err(Refused::new(
                        error_codes::for_log_error(&e.into()),
                        "invalid record batch",
                    ));
                }
            }
        }
        let mut first_offset = None;
        let mut end_offset = 0;
        for b in batches {
            let (pid, epoch, first_seq, last_delta) = match batch::BatchHeader::parse(&b) {
                Ok(h) => (
                    h.producer_id(),
                    h.producer_epoch(),
                    h.base_sequence(),
                    h.last_offset_delta(),
                ),
                Err(e) => {
                    return Err(Refused::new(
                        error_codes::for_log_error(&e.clone().into()),
                        e.to_string(),
                    ));
                }
            };
            let last_seq = first_seq.wrapping_add(last_delta) & i32::MAX;
            match self.producers.borrow().check(pid, epoch, first_seq, last_seq) {
                Verdict::Append => {}
                Verdict::Duplicate { base_offset } => {
                    first_offset.get_or_insert(base_offset);
                    continue;
                }
                Verdict::Reject(code) => {
                    return Err(Refused::new(
                        code,
                        format!("producer {pid} epoch {epoch} sequence {first_seq} rejected"),
                    ));
                }
            }
            let info = self
                .log
                .append(b, 0)
                .map_err(|e| Refused::new(error_codes::for_log_error(&e), e.to_string()))?;
            first_offset.get_or_insert(info.base_offset);
            end_offset = info.last_offset + 1;
            let range = BatchRange {
                first_seq,
                last_seq,
                base_offset: info.base_offset,
            };
            self.producers.borrow_mut().record(pid, epoch, range, end_offset);
        }
        Ok(Appended {
            base_offset: first_offset.unwrap_or(-1),
            end_offset,
        })
    }
}
