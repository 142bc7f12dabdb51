//! Produce request parsing by hand: each partition's records are split off
//! the request frame as a `BytesMut` that shares the frame's allocation, so
//! the storage engine rewrites offsets in place and writes the very bytes
//! the client sent.

use bytes::BytesMut;
use uuid::Uuid;

use super::wire::{ParseError, Reader};

/// First version with compact strings, arrays and tagged fields.
const FLEXIBLE_FROM: i16 = 9;
/// First version naming topics by id.
const TOPIC_ID_FROM: i16 = 13;

#[derive(Debug)]
pub struct ProduceRequest {
    pub transactional_id: Option<String>,
    pub acks: i16,
    pub timeout_ms: i32,
    pub topics: Vec<ProduceTopic>,
}

#[derive(Debug)]
pub struct ProduceTopic {
    /// Set for versions up to 12.
    pub name: String,
    /// Set from version 13.
    pub topic_id: Uuid,
    pub partitions: Vec<ProducePartition>,
}

#[derive(Debug)]
pub struct ProducePartition {
    pub index: i32,
    /// The partition's record batches, verbatim; `None` when null.
    pub records: Option<BytesMut>,
}

/// Parses a Produce request body (after the request header).
pub fn parse(body: BytesMut, version: i16) -> Result<ProduceRequest, ParseError> {
    let flexible = version >= FLEXIBLE_FROM;
    let mut r = Reader::new(&body);
    let transactional_id = r.nullable_str(flexible)?.map(str::to_string);
    let acks = r.i16()?;
    let timeout_ms = r.i32()?;
    let n_topics = r.array_len(flexible)?;
    let mut topics = Vec::with_capacity(n_topics);
    // Records ranges in frame order, with (topic, partition) slots to fill.
    let mut ranges: Vec<(usize, usize, std::ops::Range<usize>)> = Vec::new();
    for t in 0..n_topics {
        let (name, topic_id) = if version >= TOPIC_ID_FROM {
            (String::new(), r.uuid()?)
        } else {
            (r.str(flexible)?.to_string(), Uuid::nil())
        };
        let n_parts = r.array_len(flexible)?;
        let mut partitions = Vec::with_capacity(n_parts);
        for p in 0..n_parts {
            let index = r.i32()?;
            if let Some(range) = r.bytes_range(flexible)? {
                ranges.push((t, p, range));
            }
            if flexible {
                r.skip_tagged_fields()?;
            }
            partitions.push(ProducePartition { index, records: None });
        }
        if flexible {
            r.skip_tagged_fields()?;
        }
        topics.push(ProduceTopic {
            name,
            topic_id,
            partitions,
        });
    }
    if flexible {
        r.skip_tagged_fields()?;
    }
    // Split the records out of the frame: no copy, each piece unique.
    let mut rest = body;
    let mut consumed = 0;
    for (t, p, range) in ranges {
        let _skip = rest.split_to(range.start - consumed);
        topics[t].partitions[p].records = Some(rest.split_to(range.len()));
        consumed = range.end;
    }
    Ok(ProduceRequest {
        transactional_id,
        acks,
        timeout_ms,
        topics,
    })
}

/// Splits a partition's records into whole batches by their length fields.
/// A batch whose length runs past the end is returned as it is, so
/// validation reports it as truncated.
pub fn split_batches(mut records: BytesMut) -> Vec<BytesMut> {
    let mut out = Vec::with_capacity(1);
    while !records.is_empty() {
        if records.len() < 12 {
            out.push(records.split());
            break;
        }
        let len = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
        let total = usize::try_from(len).map_or(usize::MAX, |l| l.saturating_add(12));
        if total > records.len() || len < 0 {
            out.push(records.split());
            break;
        }
        out.push(records.split_to(total));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest as Crate, TopicProduceData};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn crate_request(id: Uuid) -> Crate {
        let batch = sluice_engine::batch::build_simple(3, 10, 1000).freeze();
        let part = |i: i32, rec: Option<Bytes>| PartitionProduceData::default().with_index(i).with_records(rec);
        Crate::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_timeout_ms(1500)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("alpha")))
                    .with_topic_id(id)
                    .with_partition_data(vec![part(0, Some(batch.clone())), part(3, None)]),
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("beta")))
                    .with_topic_id(id)
                    .with_partition_data(vec![part(1, Some(batch))]),
            ])
    }

    #[test]
    fn parses_what_the_crate_encodes_at_every_version() {
        use kafka_protocol::protocol::Message;
        let id = Uuid::new_v4();
        for version in Crate::VERSIONS.min..=Crate::VERSIONS.max {
            let req = crate_request(id);
            let mut buf = BytesMut::new();
            req.encode(&mut buf, version).unwrap();
            let parsed = parse(buf, version).unwrap();
            assert_eq!((parsed.acks, parsed.timeout_ms), (-1, 1500), "v{version}");
            assert_eq!(parsed.topics.len(), 2);
            for (ours, theirs) in parsed.topics.iter().zip(&req.topic_data) {
                if version >= TOPIC_ID_FROM {
                    assert_eq!(ours.topic_id, id);
                } else {
                    assert_eq!(ours.name, theirs.name.0.as_str());
                }
                for (p, q) in ours.partitions.iter().zip(&theirs.partition_data) {
                    assert_eq!(p.index, q.index);
                    assert_eq!(p.records.as_deref(), q.records.as_deref(), "v{version}");
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut buf = BytesMut::new();
        crate_request(Uuid::nil()).encode(&mut buf, 9).unwrap();
        for cut in 0..buf.len() {
            assert!(parse(BytesMut::from(&buf[..cut]), 9).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn split_batches_by_length_and_keeps_a_lying_tail() {
        let a = sluice_engine::batch::build_simple(2, 5, 1);
        let b = sluice_engine::batch::build_simple(1, 7, 2);
        let mut all = BytesMut::new();
        all.extend_from_slice(&a);
        all.extend_from_slice(&b);
        all.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0, 0, 0, 1]);
        let parts = split_batches(all);
        assert_eq!(parts.len(), 3);
        assert_eq!(&parts[0][..], &a[..]);
        assert_eq!(&parts[1][..], &b[..]);
        assert_eq!(parts[2].len(), 13);
    }
}
