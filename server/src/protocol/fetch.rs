//! Fetch response encoding by hand: the response is a list of parts, memory
//! for the framing and file slices for record batches, so record bytes go
//! from the segment file to the socket without entering user space.
//! Supports Fetch v4..=18; checked against the `kafka-protocol` decoder for
//! every version in the tests below.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sluice_engine::FileSlice;
use uuid::Uuid;

use super::wire::{put_len, put_str, put_uvarint};
use super::{Part, Response};
use crate::image::BrokerMeta;

pub const MIN_VERSION: i16 = 4;
pub const MAX_VERSION: i16 = 18;
const FLEXIBLE_FROM: i16 = 12;
const TOPIC_ID_FROM: i16 = 13;
const NODE_ENDPOINTS_FROM: i16 = 16;

/// One partition's answer.
#[derive(Debug, Clone)]
pub struct PartitionData {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For a read_committed fetch, the aborted transactions among the
    /// records sent: (producer id, first offset). `None` sends null.
    pub aborted: Option<Vec<(i64, i64)>>,
    /// Whole batches from the log; `None` sends empty records.
    pub records: Option<FileSlice>,
    /// For a fetch whose last fetched epoch the leader's log does not end
    /// the same way: the largest epoch at or below it and where it ends
    /// (v12+, tagged field 0).
    pub diverging_epoch: Option<(i32, i64)>,
    /// KIP-951: for a partition this broker does not lead, the leader's id
    /// and epoch (v12+, tagged field 1).
    pub current_leader: Option<(i32, i32)>,
}

#[derive(Debug, Clone)]
pub struct TopicData {
    pub name: Arc<str>,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionData>,
}

/// Top-level fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Top {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
}

/// A tagged field holding a struct of fixed-size fields (`body`) with no
/// tagged fields of its own.
fn put_tagged_struct(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.put_u8(tag);
    put_uvarint(buf, u32::try_from(body.len() + 1).unwrap_or(u32::MAX));
    buf.put_slice(body);
    buf.put_u8(0);
}

/// Encodes a complete response frame (size prefix and header included).
/// `endpoints`, the brokers that `current_leader`s name (KIP-951), are sent
/// from v16 on.
pub fn encode(version: i16, correlation_id: i32, top: Top, topics: &[TopicData], endpoints: &[BrokerMeta]) -> Response {
    let flexible = version >= FLEXIBLE_FROM;
    let mut buf = BytesMut::with_capacity(64 + topics.iter().map(|t| 64 + t.partitions.len() * 64).sum::<usize>());
    buf.put_i32(0); // size, patched below
    buf.put_i32(correlation_id);
    if flexible {
        buf.put_u8(0); // response header tagged fields
    }
    buf.put_i32(top.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(top.error_code);
        buf.put_i32(top.session_id);
    }
    put_len(&mut buf, topics.len(), flexible);
    // Positions in `buf` after which a file part goes.
    let mut files: Vec<(usize, FileSlice)> = Vec::new();
    let mut file_bytes = 0usize;
    for t in topics {
        if version >= TOPIC_ID_FROM {
            buf.put_slice(t.topic_id.as_bytes());
        } else {
            put_str(&mut buf, &t.name, flexible);
        }
        put_len(&mut buf, t.partitions.len(), flexible);
        for p in &t.partitions {
            buf.put_i32(p.partition_index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            match &p.aborted {
                None if flexible => buf.put_u8(0),
                None => buf.put_i32(-1),
                Some(aborted) => {
                    put_len(&mut buf, aborted.len(), flexible);
                    for &(producer_id, first_offset) in aborted {
                        buf.put_i64(producer_id);
                        buf.put_i64(first_offset);
                        if flexible {
                            buf.put_u8(0);
                        }
                    }
                }
            }
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            match &p.records {
                Some(slice) if slice.len > 0 => {
                    put_len(&mut buf, slice.len as usize, flexible);
                    file_bytes += slice.len as usize;
                    files.push((buf.len(), slice.clone()));
                }
                _ => put_len(&mut buf, 0, flexible),
            }
            if flexible {
                // Tagged fields, in tag order.
                let count = u8::from(p.diverging_epoch.is_some()) + u8::from(p.current_leader.is_some());
                buf.put_u8(count);
                if let Some((epoch, end_offset)) = p.diverging_epoch {
                    let mut body = [0u8; 12];
                    body[..4].copy_from_slice(&epoch.to_be_bytes());
                    body[4..].copy_from_slice(&end_offset.to_be_bytes());
                    put_tagged_struct(&mut buf, 0, &body); // DivergingEpoch
                }
                if let Some((leader_id, leader_epoch)) = p.current_leader {
                    let mut body = [0u8; 8];
                    body[..4].copy_from_slice(&leader_id.to_be_bytes());
                    body[4..].copy_from_slice(&leader_epoch.to_be_bytes());
                    put_tagged_struct(&mut buf, 1, &body); // CurrentLeader
                }
            }
        }
        if flexible {
            buf.put_u8(0);
        }
    }
    if version >= NODE_ENDPOINTS_FROM && !endpoints.is_empty() {
        let mut field = BytesMut::new();
        put_len(&mut field, endpoints.len(), true);
        for e in endpoints {
            field.put_i32(e.id);
            put_str(&mut field, &e.host, true);
            field.put_i32(i32::from(e.port));
            field.put_u8(0); // rack: null
            field.put_u8(0); // tagged fields
        }
        buf.put_u8(1); // one tagged field
        buf.put_u8(0); // tag 0: NodeEndpoints
        put_uvarint(&mut buf, u32::try_from(field.len()).unwrap_or(u32::MAX));
        buf.put_slice(&field);
    } else if flexible {
        buf.put_u8(0);
    }
    let size = buf.len() - 4 + file_bytes;
    buf[..4].copy_from_slice(&(size as i32).to_be_bytes());
    let mem = buf.freeze();
    let mut parts = Vec::with_capacity(files.len() * 2 + 1);
    let mut at = 0;
    for (pos, slice) in files {
        if pos > at {
            parts.push(Part::Mem(mem.slice(at..pos)));
        }
        parts.push(Part::File(slice));
        at = pos;
    }
    if at < mem.len() {
        parts.push(Part::Mem(mem.slice(at..)));
    }
    Response { parts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Decodable;
    use std::io::Write;

    fn slice_of(bytes: &[u8]) -> (tempfile::NamedTempFile, FileSlice) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"junk-before").unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        let file = Arc::new(std::fs::File::open(f.path()).unwrap());
        let slice = FileSlice {
            file,
            position: 11,
            len: bytes.len() as u64,
            recent: false,
        };
        (f, slice)
    }

    /// The differential test: our parts, joined, decode with the crate's
    /// FetchResponse decoder to the same fields at every version.
    #[test]
    fn crate_decoder_reads_our_fetch_responses_at_every_version() {
        let b1 = sluice_engine::batch::build_simple(3, 100, 5).freeze();
        let b2 = sluice_engine::batch::build_simple(1, 7, 9).freeze();
        let (_f1, s1) = slice_of(&b1);
        let (_f2, s2) = slice_of(&b2);
        let id_a = Uuid::new_v4();
        let topics = vec![
            TopicData {
                name: "alpha".into(),
                topic_id: id_a,
                partitions: vec![
                    PartitionData {
                        partition_index: 0,
                        error_code: 0,
                        high_watermark: 42,
                        last_stable_offset: 42,
                        log_start_offset: 3,
                        aborted: Some(vec![(7, 11), (9, 30)]),
                        records: Some(s1),
                        diverging_epoch: None,
                        current_leader: None,
                    },
                    PartitionData {
                        partition_index: 4,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        aborted: None,
                        records: None,
                        diverging_epoch: Some((3, 17)),
                        current_leader: None,
                    },
                    PartitionData {
                        partition_index: 5,
                        error_code: 6,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        aborted: None,
                        records: None,
                        diverging_epoch: None,
                        current_leader: Some((3, 9)),
                    },
                ],
            },
            TopicData {
                name: "beta".into(),
                topic_id: Uuid::new_v4(),
                partitions: vec![PartitionData {
                    partition_index: 2,
                    error_code: 0,
                    high_watermark: 7,
                    last_stable_offset: 7,
                    log_start_offset: 0,
                    aborted: Some(Vec::new()),
                    records: Some(s2),
                    diverging_epoch: Some((1, 2)),
                    current_leader: Some((2, 5)),
                }],
            },
        ];
        let top = Top {
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 0,
        };
        // A host long enough that the field's size takes two varint bytes.
        let broker = |id: i32, host: String, port: u16| BrokerMeta {
            id,
            incarnation: Uuid::nil(),
            epoch: 0,
            host,
            port,
            shards: 1,
            fenced: false,
            registered_ms: 0,
            shut_down: false,
            clean_start: false,
            endpoints: Vec::new(),
        };
        let endpoints = vec![broker(3, "h".repeat(150), 9093), broker(2, "127.0.0.2".into(), 9092)];
        for version in MIN_VERSION..=MAX_VERSION {
            let resp = encode(version, 77, top, &topics, &endpoints);
            assert!(resp.parts.iter().any(|p| matches!(p, Part::File(_))));
            let mut wire = resp.to_bytes().unwrap();
            assert_eq!(wire.get_i32() as usize, wire.len(), "v{version} size prefix");
            let header_version = if version >= FLEXIBLE_FROM { 1 } else { 0 };
            let header = ResponseHeader::decode(&mut wire, header_version).unwrap();
            assert_eq!(header.correlation_id, 77);
            let decoded = FetchResponse::decode(&mut wire, version).unwrap();
            assert!(wire.is_empty(), "v{version}: {} bytes left over", wire.len());
            assert_eq!(decoded.responses.len(), 2);
            let sent: Vec<(i32, String, i32)> = decoded
                .node_endpoints
                .iter()
                .map(|e| (e.node_id.0, e.host.to_string(), e.port))
                .collect();
            if version >= NODE_ENDPOINTS_FROM {
                let want: Vec<(i32, String, i32)> = endpoints
                    .iter()
                    .map(|e| (e.id, e.host.clone(), i32::from(e.port)))
                    .collect();
                assert_eq!(sent, want, "v{version}");
                assert!(decoded.node_endpoints.iter().all(|e| e.rack.is_none()));
            } else {
                assert!(sent.is_empty(), "v{version}");
            }
            for (d, t) in decoded.responses.iter().zip(&topics) {
                if version >= TOPIC_ID_FROM {
                    assert_eq!(d.topic_id, t.topic_id);
                } else {
                    assert_eq!(d.topic.0.as_str(), &*t.name);
                }
                for (dp, tp) in d.partitions.iter().zip(&t.partitions) {
                    assert_eq!(dp.partition_index, tp.partition_index);
                    assert_eq!(dp.error_code, tp.error_code);
                    assert_eq!(dp.high_watermark, tp.high_watermark);
                    assert_eq!(dp.last_stable_offset, tp.last_stable_offset);
                    if version >= 5 {
                        assert_eq!(dp.log_start_offset, tp.log_start_offset);
                    }
                    let aborted = dp
                        .aborted_transactions
                        .as_ref()
                        .map(|a| a.iter().map(|t| (t.producer_id.0, t.first_offset)).collect::<Vec<_>>());
                    assert_eq!(aborted, tp.aborted, "v{version}");
                    if version >= FLEXIBLE_FROM {
                        let (e, o) = tp.diverging_epoch.unwrap_or((-1, -1));
                        assert_eq!((dp.diverging_epoch.epoch, dp.diverging_epoch.end_offset), (e, o));
                        let (l, le) = tp.current_leader.unwrap_or((-1, -1));
                        assert_eq!(
                            (dp.current_leader.leader_id.0, dp.current_leader.leader_epoch),
                            (l, le),
                            "v{version}"
                        );
                    }
                    let want = tp.records.as_ref().map(|s| s.to_bytes().unwrap()).unwrap_or_default();
                    assert_eq!(dp.records.clone().unwrap_or_default(), want, "v{version}");
                }
            }
        }
    }
}
