//! Records of `__transaction_state`, in the layout Kafka uses for the same
//! topic (its `TransactionLogKey` and `TransactionLogValue`, version 0):
//!
//! - key: `i16 version = 0`, `string transactional_id`
//! - value: `i16 version = 0`, `i64 producer_id`, `i16 producer_epoch`,
//!   `i32 timeout_ms`, `i8 status`, `[string topic, [i32 partition]]
//!   partitions` (null when none), `i64 last_update_ms`, `i64 start_ms`
//! - a null value (tombstone) removes an expired transactional id.
//!
//! Strings are Kafka's classic `i16` length and UTF-8 bytes; arrays an
//! `i32` count. The latest record of a key is the id's state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sluice_engine::batch::{self, ProducerFields, Record};

use super::state::{Status, TxnMeta};
use crate::protocol::wire::{ParseError, Reader};

const VERSION: i16 = 0;

fn put_str(out: &mut BytesMut, s: &str) {
    // Transactional ids and topic names are bounded well below i16::MAX
    // by the request limits checked before they get here.
    let n = s.len().min(i16::MAX as usize);
    out.put_i16(n as i16);
    out.put_slice(&s.as_bytes()[..n]);
}

pub fn encode_key(id: &str) -> Vec<u8> {
    let mut k = BytesMut::with_capacity(4 + id.len());
    k.put_i16(VERSION);
    put_str(&mut k, id);
    k.to_vec()
}

pub fn encode_value(m: &TxnMeta) -> Vec<u8> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in &m.partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let mut out = BytesMut::with_capacity(64);
    out.put_i16(VERSION);
    out.put_i64(m.producer_id);
    out.put_i16(m.epoch);
    out.put_i32(m.timeout_ms);
    out.put_i8(m.status.code());
    if by_topic.is_empty() {
        out.put_i32(-1);
    } else {
        out.put_i32(by_topic.len() as i32);
        for (topic, partitions) in by_topic {
            put_str(&mut out, topic);
            out.put_i32(partitions.len() as i32);
            for p in partitions {
                out.put_i32(p);
            }
        }
    }
    out.put_i64(m.updated_ms);
    out.put_i64(m.start_ms);
    out.to_vec()
}

/// One record: the id's new state, or `None` for its removal.
pub fn batch_of(id: &str, state: Option<&TxnMeta>, now_ms: i64) -> BytesMut {
    let record = Record {
        timestamp: now_ms,
        key: Some(encode_key(id)),
        value: state.map(encode_value),
        headers: Vec::new(),
    };
    batch::build(&[record], ProducerFields::NONE)
}

fn bad(what: &'static str) -> ParseError {
    ParseError { at: 0, what }
}

/// Decodes one record: the transactional id and its state (`None`: the id
/// was removed).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<(Arc<str>, Option<TxnMeta>), ParseError> {
    let mut k = Reader::new(key);
    if k.i16()? != VERSION {
        return Err(bad("transaction log key version"));
    }
    let id: Arc<str> = k.str(false)?.into();
    let Some(value) = value else {
        return Ok((id, None));
    };
    let mut r = Reader::new(value);
    if r.i16()? != VERSION {
        return Err(bad("transaction log value version"));
    }
    let producer_id = r.i64()?;
    let epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let status = Status::from_code(r.i8()?).ok_or(bad("transaction status"))?;
    let mut partitions = BTreeSet::new();
    let topics = r.i32()?;
    for _ in 0..topics.max(0) {
        let topic: Arc<str> = r.str(false)?.into();
        let n = r.i32()?;
        for _ in 0..n.max(0) {
            partitions.insert((topic.clone(), r.i32()?));
        }
    }
    let updated_ms = r.i64()?;
    let start_ms = r.i64()?;
    Ok((
        id.clone(),
        Some(TxnMeta {
            id,
            producer_id,
            epoch,
            timeout_ms,
            status,
            partitions,
            start_ms,
            updated_ms,
        }),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn states_and_removals_round_trip_through_a_batch() {
        let m = TxnMeta {
            id: "app-1".into(),
            producer_id: 4000,
            epoch: 3,
            timeout_ms: 60_000,
            status: Status::PrepareCommit,
            partitions: [("a".into(), 0), ("a".into(), 2), ("b".into(), 1)]
                .into_iter()
                .collect(),
            start_ms: 100,
            updated_ms: 200,
        };
        for state in [Some(&m), None] {
            let b = batch_of(&m.id, state, 5);
            let mut seen = Vec::new();
            crate::groups::records::for_each_record(&b, |k, v| seen.push(decode(k, v).unwrap())).unwrap();
            assert_eq!(seen, vec![(m.id.clone(), state.cloned())]);
        }
        let empty = TxnMeta {
            partitions: BTreeSet::new(),
            status: Status::Empty,
            ..m.clone()
        };
        let v = encode_value(&empty);
        assert_eq!(decode(&encode_key("app-1"), Some(&v)).unwrap().1, Some(empty));
        assert!(decode(&encode_key("app-1"), Some(&v[..v.len() - 1])).is_err());
    }
}
