//! Records of `__consumer_offsets`, in the layout Kafka uses for the same
//! topic, so tools that decode Kafka's offsets topic read Sluice's too:
//!
//! - key: `i16 version = 1`, `string group`, `string topic`, `i32 partition`
//! - value: `i16 version = 3`, `i64 offset`, `i32 leader_epoch`,
//!   `string metadata`, `i64 commit_timestamp`
//! - a null value (tombstone) removes the committed offset.
//!
//! Strings are Kafka's classic `i16` length and UTF-8 bytes. Each commit
//! request becomes one uncompressed record batch.
//!
//! Consumer-protocol groups (KIP-848) keep their state in records of
//! Sluice's own layout, under key versions Kafka does not use:
//!
//! - group: key `i16 version = 1000`, `string group`; value `i16 version =
//!   0` and the JSON of `consumer::GroupValue` (epochs, subscribed topics'
//!   partition counts, assignor);
//! - member: key `i16 version = 1001`, `string group`, `string member_id`;
//!   value `i16 version = 0` and the JSON of `consumer::MemberValue`
//!   (subscription, epochs, state, assigned, revoking and target
//!   partitions by topic id);
//! - a null value deletes the group's or the member's record.

use bytes::{BufMut, BytesMut};
use sluice_engine::batch::{self, ProducerFields, Record};

use super::consumer::Record as GroupRecord;
use crate::protocol::wire::{ParseError, Reader};

const KEY_VERSION_OFFSET: i16 = 1;
const VALUE_VERSION: i16 = 3;

/// One committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

/// One record of the offsets topic, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRecord {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// `None`: the offset was deleted.
    pub value: Option<OffsetValue>,
}

impl OffsetRecord {
    /// The records of a commit of `offsets` (topic, partition, value) for
    /// `group`.
    pub fn commits(group: &str, offsets: Vec<(String, i32, OffsetValue)>) -> Vec<OffsetRecord> {
        offsets
            .into_iter()
            .map(|(topic, partition, value)| OffsetRecord {
                group: group.to_string(),
                topic,
                partition,
                value: Some(value),
            })
            .collect()
    }
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Group ids, topic names and metadata are bounded well below i16::MAX
    // by the request limits checked before they get here.
    let n = s.len().min(i16::MAX as usize);
    out.put_i16(n as i16);
    out.put_slice(&s.as_bytes()[..n]);
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = BytesMut::with_capacity(8 + group.len() + topic.len());
    k.put_i16(KEY_VERSION_OFFSET);
    put_str(&mut k, group);
    put_str(&mut k, topic);
    k.put_i32(partition);
    k.to_vec()
}

pub fn encode_value(v: &OffsetValue) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(26 + v.metadata.len());
    out.put_i16(VALUE_VERSION);
    out.put_i64(v.offset);
    out.put_i32(v.leader_epoch);
    put_str(&mut out, &v.metadata);
    out.put_i64(v.commit_ms);
    out.to_vec()
}

/// One batch holding `records`, ready for [`sluice_engine::Log::append`].
pub fn batch_of(records: &[OffsetRecord], now_ms: i64) -> BytesMut {
    batch::build(&records_of(records, now_ms), ProducerFields::NONE)
}

/// One transactional batch of producer `producer_id` at `epoch` holding
/// `records` (TxnOffsetCommit): it belongs to the producer's transaction,
/// which its marker in this partition commits or aborts. No sequence: the
/// coordinator writes it, not the producer.
pub fn txn_batch_of(records: &[OffsetRecord], now_ms: i64, producer_id: i64, epoch: i16) -> BytesMut {
    let producer = ProducerFields {
        producer_id,
        producer_epoch: epoch,
        base_sequence: -1,
    };
    batch::build_with(&records_of(records, now_ms), producer, batch::TRANSACTIONAL)
}

fn records_of(records: &[OffsetRecord], now_ms: i64) -> Vec<Record> {
    records
        .iter()
        .map(|r| Record {
            timestamp: now_ms,
            key: Some(encode_key(&r.group, &r.topic, r.partition)),
            value: r.value.as_ref().map(encode_value),
            headers: Vec::new(),
        })
        .collect()
}

const KEY_VERSION_CONSUMER_GROUP: i16 = 1000;
const KEY_VERSION_CONSUMER_MEMBER: i16 = 1001;
const CONSUMER_VALUE_VERSION: i16 = 0;

/// The key and value of a consumer-protocol group's record.
pub fn encode_consumer(group: &str, r: &GroupRecord) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut k = BytesMut::new();
    let json = match r {
        GroupRecord::Group(v) => {
            k.put_i16(KEY_VERSION_CONSUMER_GROUP);
            put_str(&mut k, group);
            v.as_ref().map(serde_json::to_vec)
        }
        GroupRecord::Member(id, v) => {
            k.put_i16(KEY_VERSION_CONSUMER_MEMBER);
            put_str(&mut k, group);
            put_str(&mut k, id);
            v.as_ref().map(serde_json::to_vec)
        }
    };
    // Serialising plain structs of strings, numbers and sets cannot fail.
    let value = json.map(|j| {
        let mut out = CONSUMER_VALUE_VERSION.to_be_bytes().to_vec();
        out.extend(j.unwrap_or_default());
        out
    });
    (k.to_vec(), value)
}

/// One batch of a consumer-protocol group's records.
pub fn consumer_batch_of(group: &str, records: &[GroupRecord], now_ms: i64) -> BytesMut {
    let recs: Vec<batch::Record> = records
        .iter()
        .map(|r| {
            let (key, value) = encode_consumer(group, r);
            batch::Record {
                timestamp: now_ms,
                key: Some(key),
                value,
                headers: Vec::new(),
            }
        })
        .collect();
    batch::build(&recs, ProducerFields::NONE)
}

/// Decodes a consumer-protocol group's record: its group and the change.
/// `Ok(None)` for keys of another kind.
pub fn decode_consumer(key: &[u8], value: Option<&[u8]>) -> Result<Option<(String, GroupRecord)>, ParseError> {
    let mut k = Reader::new(key);
    let version = k.i16()?;
    if version != KEY_VERSION_CONSUMER_GROUP && version != KEY_VERSION_CONSUMER_MEMBER {
        return Ok(None);
    }
    let group = classic_str(&mut k)?;
    let record = if version == KEY_VERSION_CONSUMER_GROUP {
        GroupRecord::Group(value.map(consumer_value).transpose()?)
    } else {
        let member = classic_str(&mut k)?;
        GroupRecord::Member(member, value.map(consumer_value).transpose()?)
    };
    Ok(Some((group, record)))
}

/// A consumer-protocol record's value: its version, then JSON.
fn consumer_value<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, ParseError> {
    if Reader::new(v).i16()? != CONSUMER_VALUE_VERSION {
        return Err(ParseError {
            at: 0,
            what: "consumer group record value version",
        });
    }
    serde_json::from_slice(&v[2..]).map_err(|_| ParseError {
        at: 2,
        what: "consumer group record value",
    })
}

fn classic_str(r: &mut Reader<'_>) -> Result<String, ParseError> {
    Ok(r.str(false)?.to_string())
}

/// Decodes one record's key and value. `Ok(None)` for keys of another kind
/// (Kafka's group metadata records), which Sluice does not write.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<OffsetRecord>, ParseError> {
    let mut k = Reader::new(key);
    let version = k.i16()?;
    if version != 0 && version != KEY_VERSION_OFFSET {
        return Ok(None);
    }
    let group = classic_str(&mut k)?;
    let topic = classic_str(&mut k)?;
    let partition = k.i32()?;
    let value = match value {
        None => None,
        Some(v) => {
            let mut r = Reader::new(v);
            let version = r.i16()?;
            let offset = r.i64()?;
            let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
            let metadata = classic_str(&mut r)?;
            let commit_ms = r.i64()?;
            Some(OffsetValue {
                offset,
                leader_epoch,
                metadata,
                commit_ms,
            })
        }
    };
    Ok(Some(OffsetRecord {
        group,
        topic,
        partition,
        value,
    }))
}

/// Calls `f(key, value)` for each record of an uncompressed v2 batch.
pub fn for_each_record(batch_bytes: &[u8], mut f: impl FnMut(&[u8], Option<&[u8]>)) -> Result<(), ParseError> {
    let header = batch::BatchHeader::parse(batch_bytes).map_err(|_| ParseError {
        at: 0,
        what: "record batch header",
    })?;
    if header.compression() != 0 {
        return Err(ParseError {
            at: 21,
            what: "compressed batch in the offsets topic",
        });
    }
    let end = header.total_len().unwrap_or(0).min(batch_bytes.len());
    batch::for_each_record(
        &batch_bytes[batch::HEADER_BYTES.min(end)..end],
        header.records_count(),
        |k, v| f(k.unwrap_or(&[]), v),
    )
    .map_err(|_| ParseError {
        at: batch::HEADER_BYTES,
        what: "record in an offsets batch",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_batch() {
        let recs = vec![
            OffsetRecord {
                group: "g1".into(),
                topic: "orders".into(),
                partition: 3,
                value: Some(OffsetValue {
                    offset: 42,
                    leader_epoch: 0,
                    metadata: "m".into(),
                    commit_ms: 1_700_000_000_000,
                }),
            },
            OffsetRecord {
                group: "g1".into(),
                topic: "orders".into(),
                partition: 4,
                value: None,
            },
        ];
        let b = batch_of(&recs, 5);
        let mut back = Vec::new();
        for_each_record(&b, |k, v| back.push(decode(k, v).unwrap().unwrap())).unwrap();
        assert_eq!(back, recs);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let recs = [OffsetRecord {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: Some(OffsetValue {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_ms: 0,
            }),
        }];
        let key = encode_key("g", "t", 0);
        let value = encode_value(recs[0].value.as_ref().unwrap());
        for cut in 0..key.len() {
            assert!(decode(&key[..cut], None).is_err());
        }
        for cut in 0..value.len() {
            assert!(decode(&key, Some(&value[..cut])).is_err());
        }
        // Another kind of key (group metadata, version 2) is skipped.
        assert_eq!(decode(&[0, 2, 0, 1, b'g'], Some(&[])).unwrap(), None);
    }

    #[test]
    fn consumer_group_records_round_trip_and_are_skipped_by_the_offsets_reader() {
        use super::super::consumer::{GroupValue, MemberState, MemberValue};
        let topic = uuid::Uuid::from_u128(7);
        let member = MemberValue {
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            topics: vec!["orders".into()],
            regex: None,
            assignor: Some("range".into()),
            rebalance_timeout_ms: 300_000,
            epoch: 3,
            previous_epoch: 2,
            state: MemberState::UnrevokedPartitions,
            assigned: [(topic, 0)].into_iter().collect(),
            revoking: [(topic, 1)].into_iter().collect(),
            target: [(topic, 0), (topic, 2)].into_iter().collect(),
        };
        let recs = vec![
            GroupRecord::Group(Some(GroupValue {
                epoch: 3,
                assignment_epoch: 3,
                topics: [(topic, 3)].into_iter().collect(),
                assignor: "range".into(),
            })),
            GroupRecord::Member("m-1".into(), Some(Box::new(member))),
            GroupRecord::Member("m-2".into(), None),
            GroupRecord::Group(None),
        ];
        let b = consumer_batch_of("g", &recs, 5);
        let mut back = Vec::new();
        for_each_record(&b, |k, v| {
            assert_eq!(decode(k, v).unwrap(), None);
            back.push(decode_consumer(k, v).unwrap().unwrap());
        })
        .unwrap();
        assert_eq!(back, recs.into_iter().map(|r| ("g".to_string(), r)).collect::<Vec<_>>());
        let (key, value) = encode_consumer("g", &GroupRecord::Group(None));
        assert!(value.is_none());
        for cut in 0..key.len() {
            assert!(decode_consumer(&key[..cut], None).is_err());
        }
        assert!(decode_consumer(&key, Some(&[0, 0, b'{'])).is_err());
    }
}
