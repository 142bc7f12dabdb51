//! A structural check of control-plane request bodies before the
//! `kafka-protocol` crate decodes them.
//!
//! The crate's decoders size a `Vec` from an array length read off the wire
//! before decoding any element, so a few bytes that claim four billion
//! elements make it allocate hundreds of gigabytes and abort the process.
//! This walker follows each request's layout (from Kafka's message schemas)
//! with the bounds-checked [`Reader`], which refuses any length longer than
//! the bytes that remain. A body that passes can only make the crate
//! allocate in proportion to its size.

use kafka_protocol::messages::ApiKey;

use super::wire::{ParseError, Reader};

/// The wire type of one field.
#[derive(Debug, Clone, Copy)]
enum T {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Uuid,
    Str,
    NStr,
    /// Array (nullable or not) of structs.
    Arr(&'static [F]),
    /// Array of int32.
    I32s,
    /// Array of int64.
    I64s,
    /// Array of strings.
    Strs,
    /// Nullable bytes.
    Bytes,
    /// A nullable struct: an int8 (-1 null), then the fields.
    Opt(&'static [F]),
}

/// A field present in versions `lo..=hi`.
#[derive(Debug, Clone, Copy)]
struct F(T, i16, i16);

const ALL: i16 = i16::MAX;

const METADATA: &[F] = &[
    F(T::Arr(&[F(T::Uuid, 10, ALL), F(T::NStr, 0, ALL)]), 0, ALL),
    F(T::Bool, 4, ALL),
    F(T::Bool, 8, 10),
    F(T::Bool, 8, ALL),
];

const CREATE_TOPICS: &[F] = &[
    F(
        T::Arr(&[
            F(T::Str, 0, ALL),
            F(T::I32, 0, ALL),
            F(T::I16, 0, ALL),
            F(T::Arr(&[F(T::I32, 0, ALL), F(T::I32s, 0, ALL)]), 0, ALL),
            F(T::Arr(&[F(T::Str, 0, ALL), F(T::NStr, 0, ALL)]), 0, ALL),
        ]),
        0,
        ALL,
    ),
    F(T::I32, 0, ALL),
    F(T::Bool, 1, ALL),
];

const DELETE_TOPICS: &[F] = &[
    F(T::Arr(&[F(T::NStr, 6, ALL), F(T::Uuid, 6, ALL)]), 6, ALL),
    F(T::Strs, 0, 5),
    F(T::I32, 0, ALL),
];

const CREATE_PARTITIONS: &[F] = &[
    F(
        T::Arr(&[
            F(T::Str, 0, ALL),
            F(T::I32, 0, ALL),
            F(T::Arr(&[F(T::I32s, 0, ALL)]), 0, ALL),
        ]),
        0,
        ALL,
    ),
    F(T::I32, 0, ALL),
    F(T::Bool, 0, ALL),
];

const LIST_OFFSETS: &[F] = &[
    F(T::I32, 0, ALL),
    F(T::I8, 2, ALL),
    F(
        T::Arr(&[
            F(T::Str, 0, ALL),
            F(
                T::Arr(&[F(T::I32, 0, ALL), F(T::I32, 4, ALL), F(T::I64, 0, ALL), F(T::I32, 0, 0)]),
                0,
                ALL,
            ),
        ]),
        0,
        ALL,
    ),
    F(T::I32, 10, ALL),
];

const OFFSET_FOR_LEADER_EPOCH: &[F] = &[
    F(T::I32, 3, ALL),
    F(
        T::Arr(&[
            F(T::Str, 0, ALL),
            F(
                T::Arr(&[F(T::I32, 0, ALL), F(T::I32, 2, ALL), F(T::I32, 0, ALL)]),
                0,
                ALL,
            ),
        ]),
        0,
        ALL,
    ),
];

const DELETE_RECORDS: &[F] = &[
    F(
        T::Arr(&[
            F(T::Str, 0, ALL),
            F(T::Arr(&[F(T::I32, 0, ALL), F(T::I64, 0, ALL)]), 0, ALL),
        ]),
        0,
        ALL,
    ),
    F(T::I32, 0, ALL),
];

const INIT_PRODUCER_ID: &[F] = &[
    F(T::NStr, 0, ALL),
    F(T::I32, 0, ALL),
    F(T::I64, 3, ALL),
    F(T::I16, 3, ALL),
    F(T::Bool, 6, ALL),
    F(T::Bool, 6, ALL),
];

const TXN_TOPICS: &[F] = &[F(T::Str, 0, ALL), F(T::I32s, 0, ALL)];

const ADD_PARTITIONS_TO_TXN: &[F] = &[
    F(
        T::Arr(&[
            F(T::Str, 0, ALL),
            F(T::I64, 0, ALL),
            F(T::I16, 0, ALL),
            F(T::Bool, 0, ALL),
            F(T::Arr(TXN_TOPICS), 0, ALL),
        ]),
        4,
        ALL,
    ),
    F(T::Str, 0, 3),
    F(T::I64, 0, 3),
    F(T::I16, 0, 3),
    F(T::Arr(TXN_TOPICS), 0, 3),
];

const ADD_OFFSETS_TO_TXN: &[F] = &[
    F(T::Str, 0, ALL),
    F(T::I64, 0, ALL),
    F(T::I16, 0, ALL),
    F(T::Str, 0, ALL),
];

const END_TXN: &[F] = &[
    F(T::Str, 0, ALL),
    F(T::I64, 0, ALL),
    F(T::I16, 0, ALL),
    F(T::Bool, 0, ALL),
];

const TXN_OFFSET_COMMIT: &[F] = &[
    F(T::Str, 0, ALL),
    F(T::Str, 0, ALL),
    F(T::I64, 0, ALL),
    F(T::I16, 0, ALL),
    F(T::I32, 3, ALL),
    F(T::Str, 3, ALL),
    F(T::NStr, 3, ALL),
    F(
        T::Arr(&[
            F(T::Str, 0, ALL),
            F(
                T::Arr(&[
                    F(T::I32, 0, ALL),
                    F(T::I64, 0, ALL),
                    F(T::I32, 2, ALL),
                    F(T::NStr, 0, ALL),
                ]),
                0,
                ALL,
            ),
        ]),
        0,
        ALL,
    ),
];

const DESCRIBE_PRODUCERS: &[F] = &[F(T::Arr(TXN_TOPICS), 0, ALL)];

const DESCRIBE_TRANSACTIONS: &[F] = &[F(T::Strs, 0, ALL)];

const LIST_TRANSACTIONS: &[F] = &[
    F(T::Strs, 0, ALL),
    F(T::I64s, 0, ALL),
    F(T::I64, 1, ALL),
    F(T::NStr, 2, ALL),
];

const WRITE_TXN_MARKERS: &[F] = &[F(
    T::Arr(&[
        F(T::I64, 0, ALL),
        F(T::I16, 0, ALL),
        F(T::Bool, 0, ALL),
        F(T::Arr(&[F(T::Str, 0, ALL), F(T::I32s, 0, ALL)]), 0, ALL),
        F(T::I32, 0, ALL),
    ]),
    0,
    ALL,
)];

const DESCRIBE_CONFIGS: &[F] = &[
    F(
        T::Arr(&[F(T::I8, 0, ALL), F(T::Str, 0, ALL), F(T::Strs, 0, ALL)]),
        0,
        ALL,
    ),
    F(T::Bool, 1, ALL),
    F(T::Bool, 3, ALL),
];

const ALTER_CONFIGS: &[F] = &[
    F(
        T::Arr(&[
            F(T::I8, 0, ALL),
            F(T::Str, 0, ALL),
            F(T::Arr(&[F(T::Str, 0, ALL), F(T::NStr, 0, ALL)]), 0, ALL),
        ]),
        0,
        ALL,
    ),
    F(T::Bool, 0, ALL),
];

const INCREMENTAL_ALTER_CONFIGS: &[F] = &[
    F(
        T::Arr(&[
            F(T::I8, 0, ALL),
            F(T::Str, 0, ALL),
            F(
                T::Arr(&[F(T::Str, 0, ALL), F(T::I8, 0, ALL), F(T::NStr, 0, ALL)]),
                0,
                ALL,
            ),
        ]),
        0,
        ALL,
    ),
    F(T::Bool, 0, ALL),
];

const DESCRIBE_CLUSTER: &[F] = &[F(T::Bool, 0, ALL), F(T::I8, 1, ALL), F(T::Bool, 2, ALL)];

const FETCH: &[F] = &[
    F(T::I32, 0, 14),
    F(T::I32, 0, ALL),
    F(T::I32, 0, ALL),
    F(T::I32, 3, ALL),
    F(T::I8, 4, ALL),
    F(T::I32, 7, ALL),
    F(T::I32, 7, ALL),
    F(
        T::Arr(&[
            F(T::Str, 0, 12),
            F(T::Uuid, 13, ALL),
            F(
                T::Arr(&[
                    F(T::I32, 0, ALL),
                    F(T::I32, 9, ALL),
                    F(T::I64, 0, ALL),
                    F(T::I32, 12, ALL),
                    F(T::I64, 5, ALL),
                    F(T::I32, 0, ALL),
                ]),
                0,
                ALL,
            ),
        ]),
        0,
        ALL,
    ),
    F(
        T::Arr(&[F(T::Str, 7, 12), F(T::Uuid, 13, ALL), F(T::I32s, 7, ALL)]),
        7,
        ALL,
    ),
    F(T::Str, 11, ALL),
];

const FIND_COORDINATOR: &[F] = &[F(T::Str, 0, 3), F(T::I8, 1, ALL), F(T::Strs, 4, ALL)];

const JOIN_GROUP: &[F] = &[
    F(T::Str, 0, ALL),
    F(T::I32, 0, ALL),
    F(T::I32, 1, ALL),
    F(T::Str, 0, ALL),
    F(T::NStr, 5, ALL),
    F(T::Str, 0, ALL),
    F(T::Arr(&[F(T::Str, 0, ALL), F(T::Bytes, 0, ALL)]), 0, ALL),
    F(T::NStr, 8, ALL),
];

const SYNC_GROUP: &[F] = &[
    F(T::Str, 0, ALL),
    F(T::I32, 0, ALL),
    F(T::Str, 0, ALL),
    F(T::NStr, 3, ALL),
    F(T::NStr, 5, ALL),
    F(T::NStr, 5, ALL),
    F(T::Arr(&[F(T::Str, 0, ALL), F(T::Bytes, 0, ALL)]), 0, ALL),
];

const HEARTBEAT: &[F] = &[
    F(T::Str, 0, ALL),
    F(T::I32, 0, ALL),
    F(T::Str, 0, ALL),
    F(T::NStr, 3, ALL),
];

const LEAVE_GROUP: &[F] = &[
    F(T::Str, 0, ALL),
    F(T::Str, 0, 2),
    F(
        T::Arr(&[F(T::Str, 0, ALL), F(T::NStr, 0, ALL), F(T::NStr, 5, ALL)]),
        3,
        ALL,
    ),
];

const OFFSET_COMMIT: &[F] = &[
    F(T::Str, 0, ALL),
    F(T::I32, 1, ALL),
    F(T::Str, 1, ALL),
    F(T::NStr, 7, ALL),
    F(T::I64, 2, 4),
    F(
        T::Arr(&[
            F(T::Str, 0, ALL),
            F(
                T::Arr(&[
                    F(T::I32, 0, ALL),
                    F(T::I64, 0, ALL),
                    F(T::I32, 6, ALL),
                    F(T::I64, 1, 1),
                    F(T::NStr, 0, ALL),
                ]),
                0,
                ALL,
            ),
        ]),
        0,
        ALL,
    ),
];

const OFFSET_FETCH: &[F] = &[
    F(T::Str, 0, 7),
    F(T::Arr(&[F(T::Str, 0, ALL), F(T::I32s, 0, ALL)]), 0, 7),
    F(
        T::Arr(&[
            F(T::Str, 0, ALL),
            F(T::NStr, 9, ALL),
            F(T::I32, 9, ALL),
            F(T::Arr(&[F(T::Str, 0, ALL), F(T::I32s, 0, ALL)]), 0, ALL),
        ]),
        8,
        ALL,
    ),
    F(T::Bool, 7, ALL),
];

const OFFSET_DELETE: &[F] = &[
    F(T::Str, 0, ALL),
    F(
        T::Arr(&[F(T::Str, 0, ALL), F(T::Arr(&[F(T::I32, 0, ALL)]), 0, ALL)]),
        0,
        ALL,
    ),
];

const LIST_GROUPS: &[F] = &[F(T::Strs, 4, ALL), F(T::Strs, 5, ALL)];

const DESCRIBE_GROUPS: &[F] = &[F(T::Strs, 0, ALL), F(T::Bool, 3, ALL)];

const DELETE_GROUPS: &[F] = &[F(T::Strs, 0, ALL)];

const CONSUMER_GROUP_HEARTBEAT: &[F] = &[
    F(T::Str, 0, ALL),
    F(T::Str, 0, ALL),
    F(T::I32, 0, ALL),
    F(T::NStr, 0, ALL),
    F(T::NStr, 0, ALL),
    F(T::I32, 0, ALL),
    F(T::Strs, 0, ALL),
    F(T::NStr, 1, ALL),
    F(T::NStr, 0, ALL),
    F(T::Arr(&[F(T::Uuid, 0, ALL), F(T::I32s, 0, ALL)]), 0, ALL),
];

const CONSUMER_GROUP_DESCRIBE: &[F] = &[F(T::Strs, 0, ALL), F(T::Bool, 0, ALL)];

const DESCRIBE_LOG_DIRS: &[F] = &[F(T::Arr(&[F(T::Str, 0, ALL), F(T::I32s, 0, ALL)]), 0, ALL)];

const DESCRIBE_TOPIC_PARTITIONS: &[F] = &[
    F(T::Arr(&[F(T::Str, 0, ALL)]), 0, ALL),
    F(T::I32, 0, ALL),
    F(T::Opt(&[F(T::Str, 0, ALL), F(T::I32, 0, ALL)]), 0, ALL),
];

const SASL_HANDSHAKE: &[F] = &[F(T::Str, 0, ALL)];

const SASL_AUTHENTICATE: &[F] = &[F(T::Bytes, 0, ALL)];

const ALTER_USER_SCRAM_CREDENTIALS: &[F] = &[
    F(T::Arr(&[F(T::Str, 0, ALL), F(T::I8, 0, ALL)]), 0, ALL),
    F(
        T::Arr(&[
            F(T::Str, 0, ALL),
            F(T::I8, 0, ALL),
            F(T::I32, 0, ALL),
            F(T::Bytes, 0, ALL),
            F(T::Bytes, 0, ALL),
        ]),
        0,
        ALL,
    ),
];

const DESCRIBE_USER_SCRAM_CREDENTIALS: &[F] = &[F(T::Arr(&[F(T::Str, 0, ALL)]), 0, ALL)];

const ACL_FILTER: &[F] = &[
    F(T::I8, 0, ALL),
    F(T::NStr, 0, ALL),
    F(T::I8, 1, ALL),
    F(T::NStr, 0, ALL),
    F(T::NStr, 0, ALL),
    F(T::I8, 0, ALL),
    F(T::I8, 0, ALL),
];

const CREATE_ACLS: &[F] = &[F(
    T::Arr(&[
        F(T::I8, 0, ALL),
        F(T::Str, 0, ALL),
        F(T::I8, 1, ALL),
        F(T::Str, 0, ALL),
        F(T::Str, 0, ALL),
        F(T::I8, 0, ALL),
        F(T::I8, 0, ALL),
    ]),
    0,
    ALL,
)];

const DELETE_ACLS: &[F] = &[F(T::Arr(ACL_FILTER), 0, ALL)];

fn layout(key: ApiKey) -> Option<&'static [F]> {
    Some(match key {
        ApiKey::Metadata => METADATA,
        ApiKey::CreateTopics => CREATE_TOPICS,
        ApiKey::DeleteTopics => DELETE_TOPICS,
        ApiKey::CreatePartitions => CREATE_PARTITIONS,
        ApiKey::ListOffsets => LIST_OFFSETS,
        ApiKey::DeleteRecords => DELETE_RECORDS,
        ApiKey::OffsetForLeaderEpoch => OFFSET_FOR_LEADER_EPOCH,
        ApiKey::InitProducerId => INIT_PRODUCER_ID,
        ApiKey::WriteTxnMarkers => WRITE_TXN_MARKERS,
        ApiKey::AddPartitionsToTxn => ADD_PARTITIONS_TO_TXN,
        ApiKey::AddOffsetsToTxn => ADD_OFFSETS_TO_TXN,
        ApiKey::EndTxn => END_TXN,
        ApiKey::TxnOffsetCommit => TXN_OFFSET_COMMIT,
        ApiKey::DescribeProducers => DESCRIBE_PRODUCERS,
        ApiKey::DescribeTransactions => DESCRIBE_TRANSACTIONS,
        ApiKey::ListTransactions => LIST_TRANSACTIONS,
        ApiKey::DescribeConfigs => DESCRIBE_CONFIGS,
        ApiKey::AlterConfigs => ALTER_CONFIGS,
        ApiKey::IncrementalAlterConfigs => INCREMENTAL_ALTER_CONFIGS,
        ApiKey::DescribeCluster => DESCRIBE_CLUSTER,
        ApiKey::Fetch => FETCH,
        ApiKey::FindCoordinator => FIND_COORDINATOR,
        ApiKey::JoinGroup => JOIN_GROUP,
        ApiKey::SyncGroup => SYNC_GROUP,
        ApiKey::Heartbeat => HEARTBEAT,
        ApiKey::LeaveGroup => LEAVE_GROUP,
        ApiKey::OffsetCommit => OFFSET_COMMIT,
        ApiKey::OffsetFetch => OFFSET_FETCH,
        ApiKey::OffsetDelete => OFFSET_DELETE,
        ApiKey::ListGroups => LIST_GROUPS,
        ApiKey::DescribeGroups => DESCRIBE_GROUPS,
        ApiKey::DeleteGroups => DELETE_GROUPS,
        ApiKey::ConsumerGroupHeartbeat => CONSUMER_GROUP_HEARTBEAT,
        ApiKey::ConsumerGroupDescribe => CONSUMER_GROUP_DESCRIBE,
        ApiKey::DescribeLogDirs => DESCRIBE_LOG_DIRS,
        ApiKey::DescribeTopicPartitions => DESCRIBE_TOPIC_PARTITIONS,
        ApiKey::SaslHandshake => SASL_HANDSHAKE,
        ApiKey::CreateAcls => CREATE_ACLS,
        ApiKey::DescribeAcls => ACL_FILTER,
        ApiKey::DeleteAcls => DELETE_ACLS,
        ApiKey::SaslAuthenticate => SASL_AUTHENTICATE,
        ApiKey::AlterUserScramCredentials => ALTER_USER_SCRAM_CREDENTIALS,
        ApiKey::DescribeUserScramCredentials => DESCRIBE_USER_SCRAM_CREDENTIALS,
        _ => return None,
    })
}

fn walk_struct(r: &mut Reader<'_>, fields: &[F], version: i16, flexible: bool) -> Result<(), ParseError> {
    for &F(t, lo, hi) in fields {
        if version < lo || version > hi {
            continue;
        }
        match t {
            T::Bool | T::I8 => {
                r.i8()?;
            }
            T::I16 => {
                r.i16()?;
            }
            T::I32 => {
                r.i32()?;
            }
            T::I64 => {
                r.i64()?;
            }
            T::Uuid => {
                r.uuid()?;
            }
            T::Str | T::NStr => {
                r.nullable_str(flexible)?;
            }
            T::Arr(sub) => {
                for _ in 0..r.array_len(flexible)? {
                    walk_struct(r, sub, version, flexible)?;
                }
            }
            T::I32s => {
                let n = r.array_len(flexible)?;
                r.take(n.saturating_mul(4), "int32 array")?;
            }
            T::I64s => {
                let n = r.array_len(flexible)?;
                r.take(n.saturating_mul(8), "int64 array")?;
            }
            T::Strs => {
                for _ in 0..r.array_len(flexible)? {
                    r.nullable_str(flexible)?;
                }
            }
            T::Bytes => {
                r.bytes_range(flexible)?;
            }
            T::Opt(sub) => {
                if r.i8()? >= 0 {
                    walk_struct(r, sub, version, flexible)?;
                }
            }
        }
    }
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(())
}

/// Checks that a request body has the layout of its API version and that
/// every length in it fits in the body. APIs without a layout here are not
/// decoded by the crate and pass unchecked. Bytes after the last field are
/// ignored, as Kafka ignores them (librdkafka sends some).
pub fn check(key: ApiKey, version: i16, body: &[u8]) -> Result<(), ParseError> {
    walk(key, version, body).map(|_| ())
}

/// Walks the body; returns the bytes left after the last field.
fn walk(key: ApiKey, version: i16, body: &[u8]) -> Result<usize, ParseError> {
    let Some(fields) = layout(key) else {
        return Ok(0);
    };
    let flexible = super::request_header_flexible(key, version);
    let mut r = Reader::new(body);
    walk_struct(&mut r, fields, version, flexible)?;
    Ok(r.remaining())
}

/// Like [`check`], and the body must end exactly after the last field: the
/// tests use it to prove the layouts match the crate's encoders.
pub fn check_exact(key: ApiKey, version: i16, body: &[u8]) -> Result<(), ParseError> {
    let left = walk(key, version, body)?;
    if left != 0 {
        return Err(ParseError {
            at: body.len() - left,
            what: "bytes after the end of the request",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, Message, StrBytes};

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    fn tn(v: &str) -> TopicName {
        TopicName(s(v))
    }

    /// Requests with every array populated, so nested layouts are walked.
    /// An API, an encoder of a populated request by version, and the
    /// version range.
    type Sample = (ApiKey, Box<dyn Fn(i16) -> BytesMut>, i16, i16);

    fn samples() -> Vec<Sample> {
        fn enc<M: Encodable + Message + 'static>(m: M) -> Box<dyn Fn(i16) -> BytesMut> {
            Box::new(move |v| {
                let mut b = BytesMut::new();
                m.encode(&mut b, v).unwrap();
                b
            })
        }
        let mut out: Vec<Sample> = Vec::new();
        let mut md = MetadataRequest::default();
        md.topics = Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(tn("a"))),
            metadata_request::MetadataRequestTopic::default().with_name(Some(tn("bb"))),
        ]);
        out.push((ApiKey::Metadata, enc(md), 0, 13));
        let ct = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(tn("t"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_configs(vec![
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("1"))),
                ]),
            create_topics_request::CreatableTopic::default()
                .with_name(tn("u"))
                .with_assignments(vec![
                    create_topics_request::CreatableReplicaAssignment::default()
                        .with_broker_ids(vec![BrokerId(0), BrokerId(1)]),
                ]),
        ]);
        out.push((ApiKey::CreateTopics, enc(ct), 2, 7));
        let by_state = enc(DeleteTopicsRequest::default().with_topics(vec![
            delete_topics_request::DeleteTopicState::default().with_name(Some(tn("x"))),
        ]));
        let by_name = enc(DeleteTopicsRequest::default().with_topic_names(vec![tn("x"), tn("y")]));
        out.push((
            ApiKey::DeleteTopics,
            Box::new(move |v| if v >= 6 { by_state(v) } else { by_name(v) }),
            1,
            6,
        ));
        let cp = CreatePartitionsRequest::default().with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(tn("t"))
                .with_count(3)
                .with_assignments(Some(vec![
                    create_partitions_request::CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(0)]),
                ])),
        ]);
        out.push((ApiKey::CreatePartitions, enc(cp), 0, 3));
        let lo = ListOffsetsRequest::default().with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(tn("t"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1),
                    list_offsets_request::ListOffsetsPartition::default().with_partition_index(1),
                ]),
        ]);
        out.push((ApiKey::ListOffsets, enc(lo), 1, 10));
        let mut ofle = OffsetForLeaderEpochRequest::default();
        ofle.replica_id = BrokerId(2);
        ofle.topics = vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(tn("t"))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(1)
                        .with_current_leader_epoch(4)
                        .with_leader_epoch(3),
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default().with_partition(2),
                ]),
        ];
        out.push((ApiKey::OffsetForLeaderEpoch, enc(ofle), 2, 4));
        let dr = DeleteRecordsRequest::default().with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default()
                .with_name(tn("t"))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default().with_offset(5),
                ]),
        ]);
        out.push((ApiKey::DeleteRecords, enc(dr), 0, 2));
        let ip = InitProducerIdRequest::default().with_transactional_id(Some(TransactionalId(s("tx"))));
        out.push((ApiKey::InitProducerId, enc(ip), 0, 5));
        let wm = WriteTxnMarkersRequest::default().with_markers(vec![
            write_txn_markers_request::WritableTxnMarker::default()
                .with_producer_id(ProducerId(7))
                .with_producer_epoch(2)
                .with_transaction_result(true)
                .with_topics(vec![
                    write_txn_markers_request::WritableTxnMarkerTopic::default()
                        .with_name(tn("t"))
                        .with_partition_indexes(vec![0, 3]),
                ])
                .with_coordinator_epoch(5),
        ]);
        out.push((ApiKey::WriteTxnMarkers, enc(wm), 1, 1));
        let txn_topics = || {
            vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(tn("t"))
                    .with_partitions(vec![0, 1]),
            ]
        };
        let ap = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
            .with_v3_and_below_producer_id(ProducerId(3))
            .with_v3_and_below_topics(txn_topics());
        out.push((ApiKey::AddPartitionsToTxn, enc(ap), 0, 3));
        let ap4 = AddPartitionsToTxnRequest::default().with_transactions(vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_verify_only(true)
                .with_topics(txn_topics()),
        ]);
        out.push((ApiKey::AddPartitionsToTxn, enc(ap4), 4, 4));
        let ao = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_group_id(GroupId(s("g")));
        out.push((ApiKey::AddOffsetsToTxn, enc(ao), 0, 3));
        let et = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_committed(true);
        out.push((ApiKey::EndTxn, enc(et), 0, 4));
        let toc = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(tn("t"))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_committed_offset(5)
                            .with_committed_metadata(Some(s("m"))),
                    ]),
            ]);
        let toc3 = toc
            .clone()
            .with_member_id(s("m-1"))
            .with_group_instance_id(Some(s("i")));
        out.push((ApiKey::TxnOffsetCommit, enc(toc), 0, 2));
        out.push((ApiKey::TxnOffsetCommit, enc(toc3), 3, 3));
        let dp = DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default()
                .with_name(tn("t"))
                .with_partition_indexes(vec![0, 2]),
        ]);
        out.push((ApiKey::DescribeProducers, enc(dp), 0, 0));
        let dt = DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s("tx"))]);
        out.push((ApiKey::DescribeTransactions, enc(dt), 0, 0));
        let lt = ListTransactionsRequest::default()
            .with_state_filters(vec![s("Ongoing")])
            .with_producer_id_filters(vec![ProducerId(4)]);
        out.push((ApiKey::ListTransactions, enc(lt), 0, 1));
        let dc = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configuration_keys(Some(vec![s("retention.ms")])),
        ]);
        out.push((ApiKey::DescribeConfigs, enc(dc), 1, 4));
        let ac = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_name(s("t"))
                .with_configs(vec![
                    alter_configs_request::AlterableConfig::default().with_name(s("k")),
                ]),
        ]);
        out.push((ApiKey::AlterConfigs, enc(ac), 0, 2));
        let iac = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_name(s("t"))
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(s("k"))
                        .with_value(Some(s("v"))),
                ]),
        ]);
        out.push((ApiKey::IncrementalAlterConfigs, enc(iac), 0, 1));
        out.push((ApiKey::DescribeCluster, enc(DescribeClusterRequest::default()), 0, 2));
        let fetch_at = |v: i16| {
            let topic = fetch_request::FetchTopic::default().with_partitions(vec![
                fetch_request::FetchPartition::default().with_fetch_offset(4),
                fetch_request::FetchPartition::default().with_partition(2),
            ]);
            let topic = if v >= 13 { topic } else { topic.with_topic(tn("t")) };
            let mut req = FetchRequest::default().with_topics(vec![topic]);
            if v >= 7 {
                let forgotten = fetch_request::ForgottenTopic::default().with_partitions(vec![1, 2, 3]);
                let forgotten = if v >= 13 {
                    forgotten
                } else {
                    forgotten.with_topic(tn("g"))
                };
                req = req.with_forgotten_topics_data(vec![forgotten]);
            }
            if v >= 11 {
                req = req.with_rack_id(s("r1"));
            }
            enc(req)(v)
        };
        out.push((ApiKey::Fetch, Box::new(fetch_at), 4, 18));
        let fc_one = enc(FindCoordinatorRequest::default().with_key(s("g")));
        let fc_many = enc(FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g1"), s("g2")]));
        out.push((
            ApiKey::FindCoordinator,
            Box::new(move |v| if v >= 4 { fc_many(v) } else { fc_one(v) }),
            0,
            6,
        ));
        let jg = JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s("m"))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(bytes::Bytes::from_static(b"meta")),
                join_group_request::JoinGroupRequestProtocol::default().with_name(s("roundrobin")),
            ]);
        out.push((ApiKey::JoinGroup, enc(jg), 0, 9));
        let sg = SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s("m"))
                    .with_assignment(bytes::Bytes::from_static(b"a")),
            ]);
        out.push((ApiKey::SyncGroup, enc(sg), 0, 5));
        let hb = HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s("m"));
        out.push((ApiKey::Heartbeat, enc(hb), 0, 4));
        let lg_members = enc(LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_members(vec![
                leave_group_request::MemberIdentity::default()
                    .with_member_id(s("m"))
                    .with_group_instance_id(Some(s("i"))),
            ]));
        let lg_one = enc(LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s("m")));
        out.push((
            ApiKey::LeaveGroup,
            Box::new(move |v| if v >= 3 { lg_members(v) } else { lg_one(v) }),
            0,
            5,
        ));
        let oc = OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(tn("t"))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_offset(5)
                            .with_committed_metadata(Some(s("md"))),
                    ]),
            ]);
        out.push((ApiKey::OffsetCommit, enc(oc), 2, 9));
        let of_old = enc(OffsetFetchRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(tn("t"))
                    .with_partition_indexes(vec![0, 1]),
            ])));
        let of_new = enc(OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(tn("t"))
                        .with_partition_indexes(vec![0]),
                ])),
        ]));
        out.push((
            ApiKey::OffsetFetch,
            Box::new(move |v| if v >= 8 { of_new(v) } else { of_old(v) }),
            1,
            9,
        ));
        let od = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(tn("t"))
                    .with_partitions(vec![offset_delete_request::OffsetDeleteRequestPartition::default()]),
            ]);
        out.push((ApiKey::OffsetDelete, enc(od), 0, 0));
        let lgs = |v: i16| {
            let mut r = ListGroupsRequest::default();
            if v >= 4 {
                r = r.with_states_filter(vec![s("Stable")]);
            }
            if v >= 5 {
                r = r.with_types_filter(vec![s("classic")]);
            }
            enc(r)(v)
        };
        out.push((ApiKey::ListGroups, Box::new(lgs), 0, 5));
        let dg = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g")), GroupId(s("h"))]);
        out.push((ApiKey::DescribeGroups, enc(dg), 0, 6));
        let del = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]);
        out.push((ApiKey::DeleteGroups, enc(del), 0, 2));
        let hb = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s("m"))
            .with_member_epoch(3)
            .with_instance_id(Some(s("i")))
            .with_rack_id(Some(s("r")))
            .with_subscribed_topic_names(Some(vec![tn("a"), tn("b")]))
            .with_subscribed_topic_regex(Some(s("x.*")))
            .with_server_assignor(Some(s("range")))
            .with_topic_partitions(Some(vec![
                consumer_group_heartbeat_request::TopicPartitions::default()
                    .with_topic_id(uuid::Uuid::from_u128(9))
                    .with_partitions(vec![0, 1]),
            ]));
        let hb_v0 = hb.clone().with_subscribed_topic_regex(None);
        out.push((
            ApiKey::ConsumerGroupHeartbeat,
            Box::new(move |v| {
                if v >= 1 {
                    enc(hb.clone())(v)
                } else {
                    enc(hb_v0.clone())(v)
                }
            }),
            0,
            1,
        ));
        let cgd = ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(s("g")), GroupId(s("h"))])
            .with_include_authorized_operations(true);
        out.push((ApiKey::ConsumerGroupDescribe, enc(cgd), 0, 1));
        let mut ld = DescribeLogDirsRequest::default();
        let mut ldt = describe_log_dirs_request::DescribableLogDirTopic::default();
        ldt.topic = TopicName(s("t"));
        ldt.partitions = vec![0, 1];
        ld.topics = Some(vec![ldt]);
        out.push((ApiKey::DescribeLogDirs, enc(ld), 1, 4));
        let mut dtp = DescribeTopicPartitionsRequest::default();
        let mut tr = describe_topic_partitions_request::TopicRequest::default();
        tr.name = TopicName(s("t"));
        dtp.topics = vec![tr];
        dtp.response_partition_limit = 10;
        let mut cur = describe_topic_partitions_request::Cursor::default();
        cur.topic_name = TopicName(s("t"));
        cur.partition_index = 3;
        dtp.cursor = Some(cur);
        out.push((ApiKey::DescribeTopicPartitions, enc(dtp), 0, 0));
        let ca = CreateAclsRequest::default().with_creations(vec![
            create_acls_request::AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_resource_pattern_type(3)
                .with_principal(s("User:a"))
                .with_host(s("*"))
                .with_operation(3)
                .with_permission_type(3),
        ]);
        out.push((ApiKey::CreateAcls, enc(ca), 1, 3));
        let da = DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_resource_name_filter(Some(s("t")))
            .with_pattern_type_filter(1)
            .with_principal_filter(Some(s("User:a")))
            .with_operation(1)
            .with_permission_type(1);
        out.push((ApiKey::DescribeAcls, enc(da), 1, 3));
        let dl = DeleteAclsRequest::default().with_filters(vec![
            delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(2)
                .with_resource_name_filter(Some(s("t")))
                .with_pattern_type_filter(3)
                .with_host_filter(Some(s("*")))
                .with_operation(1)
                .with_permission_type(1),
        ]);
        out.push((ApiKey::DeleteAcls, enc(dl), 1, 3));
        let sh = SaslHandshakeRequest::default().with_mechanism(s("PLAIN"));
        out.push((ApiKey::SaslHandshake, enc(sh), 0, 1));
        let sa = SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from_static(b"\0u\0p"));
        out.push((ApiKey::SaslAuthenticate, enc(sa), 0, 2));
        let auc = AlterUserScramCredentialsRequest::default()
            .with_deletions(vec![
                alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                    .with_name(s("a"))
                    .with_mechanism(1),
            ])
            .with_upsertions(vec![
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(s("b"))
                    .with_mechanism(2)
                    .with_iterations(4096)
                    .with_salt(bytes::Bytes::from_static(b"salt"))
                    .with_salted_password(bytes::Bytes::from_static(b"pw")),
            ]);
        out.push((ApiKey::AlterUserScramCredentials, enc(auc), 0, 0));
        let duc = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
            describe_user_scram_credentials_request::UserName::default().with_name(s("a")),
        ]));
        out.push((ApiKey::DescribeUserScramCredentials, enc(duc), 0, 0));
        out
    }

    #[test]
    fn accepts_every_version_the_crate_encodes_and_rejects_every_truncation() {
        let samples = samples();
        for (key, encode, lo, hi) in &samples {
            let (key, lo, hi) = (*key, *lo, *hi);
            // The broker advertises exactly the versions the samples of the
            // API cover, and this walker covers all of them.
            let covered = samples.iter().filter(|s| s.0 == key);
            let range = (covered.clone().map(|s| s.2).min(), covered.map(|s| s.3).max());
            assert_eq!(
                crate::handlers::supported(key).map(|(a, b)| (Some(a), Some(b))),
                Some(range),
                "{key:?}"
            );
            for v in lo..=hi {
                let body = encode(v);
                check_exact(key, v, &body).unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"));
                for cut in 0..body.len() {
                    assert!(check_exact(key, v, &body[..cut]).is_err(), "{key:?} v{v} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn every_api_the_crate_decodes_has_a_layout() {
        // Produce has its own codec; ApiVersions is answered without
        // decoding its body.
        for key in crate::handlers::APIS.iter().map(|a| a.key) {
            if !matches!(key, ApiKey::Produce | ApiKey::ApiVersions) {
                assert!(
                    layout(key).is_some(),
                    "{key:?} has no layout: the crate would decode it unchecked"
                );
            }
        }
        let sampled: Vec<ApiKey> = samples().iter().map(|s| s.0).collect();
        for key in crate::handlers::APIS.iter().map(|a| a.key) {
            if layout(key).is_some() && key != ApiKey::Fetch {
                assert!(sampled.contains(&key), "{key:?} has a layout but no sample");
            }
        }
    }

    #[test]
    fn absurd_array_lengths_are_refused_before_decoding() {
        // OffsetForLeaderEpoch v2: topics claims 1e9 entries.
        assert!(check(ApiKey::OffsetForLeaderEpoch, 2, &1_000_000_000i32.to_be_bytes()).is_err());
        // Metadata v12 (flexible): topics claims 2^32 - 2 entries.
        assert!(check(ApiKey::Metadata, 12, &[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        // Metadata v1: topics claims i32::MAX entries.
        assert!(check(ApiKey::Metadata, 1, &[0x7f, 0xff, 0xff, 0xff]).is_err());
        // CreateTopics v2, a topic whose configs array claims 1e9 entries.
        let mut body = vec![0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 1, 0, 0, 0, 0];
        body.extend_from_slice(&1_000_000_000i32.to_be_bytes());
        assert!(check(ApiKey::CreateTopics, 2, &body).is_err());
    }
}
