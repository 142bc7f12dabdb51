//! Kafka v2 RecordBatch framing: the only part of the Kafka protocol the engine knows.
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset            (rewritten on append, outside the CRC)
//!      8     4  batchLength           (bytes after this field)
//!     12     4  partitionLeaderEpoch  (rewritten on append, outside the CRC)
//!     16     1  magic                 (must be 2)
//!     17     4  crc                   (CRC32C of bytes 21..end)
//!     21     2  attributes
//!     23     4  lastOffsetDelta
//!     27     8  baseTimestamp
//!     35     8  maxTimestamp
//!     43     8  producerId
//!     51     2  producerEpoch
//!     53     4  baseSequence
//!     57     4  recordsCount
//!     61     …  records
//! ```
//!
//! All integers are big-endian. Parsing reads fixed offsets of a borrowed
//! slice; nothing here allocates or copies record bytes.

use bytes::{BufMut, BytesMut};

/// Size of the fixed v2 batch header.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength itself.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only record-batch format the engine stores.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

/// Why a batch was refused. Each variant maps to one Kafka error code in the
/// broker: `Truncated`, `LengthMismatch` and `CrcMismatch` to CORRUPT_MESSAGE,
/// `TooLarge` to MESSAGE_TOO_LARGE, `BadMagic` and `RecordCountMismatch` to
/// INVALID_RECORD.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: {available} bytes available, {needed} needed")]
    Truncated { needed: usize, available: usize },
    #[error("batchLength {batch_length} does not match the {available} bytes given")]
    LengthMismatch { batch_length: i32, available: usize },
    #[error("unsupported magic {0}: only v2 record batches are stored")]
    BadMagic(i8),
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("batch of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("lastOffsetDelta {last_offset_delta} is inconsistent with recordsCount {records_count}")]
    RecordCountMismatch { last_offset_delta: i32, records_count: i32 },
    /// Only when records are decoded (replays, tools), never on append.
    #[error("record {index} of the batch is malformed")]
    BadRecord { index: i32 },
}

/// Attribute bit of a batch written inside a transaction.
pub const TRANSACTIONAL: i16 = 0x10;
/// Attribute bit of a control batch (a transaction marker).
pub const CONTROL: i16 = 0x20;

/// What a transaction marker (a control batch's one record) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

impl Marker {
    /// The control record's type field.
    fn kind(self) -> i16 {
        match self {
            Marker::Abort => 0,
            Marker::Commit => 1,
        }
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// A read-only view of a batch header. Valid only after [`BatchHeader::parse`]
/// has checked that all 61 bytes are present.
#[derive(Debug, Clone, Copy)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

impl<'a> BatchHeader<'a> {
    /// Views the header at the start of `bytes`, which must hold at least
    /// [`HEADER_BYTES`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        if bytes.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: HEADER_BYTES,
                available: bytes.len(),
            });
        }
        Ok(Self { bytes })
    }
    pub fn base_offset(&self) -> i64 {
        i64_at(self.bytes, BASE_OFFSET_AT)
    }
    pub fn batch_length(&self) -> i32 {
        i32_at(self.bytes, BATCH_LENGTH_AT)
    }
    /// Total bytes of the batch on the wire and on disk, if `batchLength` is
    /// non-negative.
    pub fn total_len(&self) -> Option<usize> {
        usize::try_from(self.batch_length())
            .ok()
            .map(|n| n + LOG_OVERHEAD_BYTES)
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        i32_at(self.bytes, LEADER_EPOCH_AT)
    }
    pub fn magic(&self) -> i8 {
        self.bytes[MAGIC_AT] as i8
    }
    pub fn crc(&self) -> u32 {
        i32_at(self.bytes, CRC_AT) as u32
    }
    pub fn attributes(&self) -> i16 {
        i16_at(self.bytes, ATTRIBUTES_AT)
    }
    /// Compression codec id from the low three attribute bits (0 = none,
    /// 1 = gzip, 2 = snappy, 3 = lz4, 4 = zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes() & 0x7) as u8
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        i32_at(self.bytes, LAST_OFFSET_DELTA_AT)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + i64::from(self.last_offset_delta())
    }
    pub fn base_timestamp(&self) -> i64 {
        i64_at(self.bytes, BASE_TIMESTAMP_AT)
    }
    pub fn max_timestamp(&self) -> i64 {
        i64_at(self.bytes, MAX_TIMESTAMP_AT)
    }
    pub fn producer_id(&self) -> i64 {
        i64_at(self.bytes, PRODUCER_ID_AT)
    }
    pub fn producer_epoch(&self) -> i16 {
        i16_at(self.bytes, PRODUCER_EPOCH_AT)
    }
    pub fn base_sequence(&self) -> i32 {
        i32_at(self.bytes, BASE_SEQUENCE_AT)
    }
    pub fn records_count(&self) -> i32 {
        i32_at(self.bytes, RECORDS_COUNT_AT)
    }
}

/// What validation learned about a batch; cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub len: usize,
    pub last_offset_delta: i32,
    pub records_count: i32,
    pub max_timestamp: i64,
}

/// CRC32C over `attributes..end`, the range Kafka's v2 CRC covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Checks one complete batch that must fill `batch` exactly: header present,
/// batchLength consistent with the buffer, size within `max_bytes`, magic 2,
/// CRC32C, and `lastOffsetDelta == recordsCount - 1` (what every producer
/// sends). The header is read once; records are not decoded.
pub fn validate(batch: &[u8], max_bytes: usize) -> Result<BatchInfo, BatchError> {
    check(batch, max_bytes, true)
}

/// [`validate`] for a batch as a log stores it, which a leader sends its
/// followers: a batch of a compacted log may hold fewer records than its
/// offsets span, none at all when every record was removed
/// (`0 <= recordsCount <= lastOffsetDelta + 1`).
pub fn validate_stored(batch: &[u8], max_bytes: usize) -> Result<BatchInfo, BatchError> {
    check(batch, max_bytes, false)
}

fn check(batch: &[u8], max_bytes: usize, as_produced: bool) -> Result<BatchInfo, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let len = match header.total_len() {
        Some(len) if len == batch.len() => len,
        _ => {
            return Err(BatchError::LengthMismatch {
                batch_length: header.batch_length(),
                available: batch.len(),
            });
        }
    };
    if len > max_bytes {
        return Err(BatchError::TooLarge {
            size: len,
            max: max_bytes,
        });
    }
    if header.magic() != MAGIC_V2 {
        return Err(BatchError::BadMagic(header.magic()));
    }
    let computed = compute_crc(batch);
    if computed != header.crc() {
        return Err(BatchError::CrcMismatch {
            stored: header.crc(),
            computed,
        });
    }
    let (delta, count) = (header.last_offset_delta(), header.records_count());
    let counted = if as_produced {
        count >= 1 && i64::from(delta) == i64::from(count) - 1
    } else {
        count >= 0 && delta >= 0 && i64::from(count) <= i64::from(delta) + 1
    };
    if !counted {
        return Err(BatchError::RecordCountMismatch {
            last_offset_delta: delta,
            records_count: count,
        });
    }
    Ok(BatchInfo {
        len,
        last_offset_delta: delta,
        records_count: count,
        max_timestamp: header.max_timestamp(),
    })
}

/// Rewrites the two fields the log owns. Both lie outside the CRC, so the
/// stored CRC stays valid and is never recomputed.
pub fn assign(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(batch.len() >= HEADER_BYTES, "assign on a batch that was not validated");
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// One record for [`build`]: what a producer would send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Producer identity fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    /// The values a non-idempotent producer sends.
    pub const NONE: Self = Self {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Appends a zigzag varint, the encoding of record fields.
#[inline]
pub fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// Bytes [`put_varint`] writes for `v`.
#[inline]
pub fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a zigzag varint at `*at` and moves `at` past it; `None` when it is
/// truncated or longer than 10 bytes.
#[inline]
pub fn get_varint(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    None
}

/// Appends a v2 batch header for `count` records, as a producer sends it:
/// baseOffset 0, leader epoch -1, batchLength and CRC left for [`seal`].
pub fn put_header(
    out: &mut BytesMut,
    attributes: i16,
    count: i32,
    base_ts: i64,
    max_ts: i64,
    producer: ProducerFields,
) {
    out.put_i64(0);
    out.put_i32(0);
    out.put_i32(-1);
    out.put_i8(MAGIC_V2);
    out.put_u32(0);
    out.put_i16(attributes);
    out.put_i32(count - 1);
    out.put_i64(base_ts);
    out.put_i64(max_ts);
    out.put_i64(producer.producer_id);
    out.put_i16(producer.producer_epoch);
    out.put_i32(producer.base_sequence);
    out.put_i32(count);
}

/// Fills in batchLength and the CRC of a whole batch written by
/// [`put_header`] and its records.
pub fn seal(batch: &mut [u8]) {
    let len = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
    batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Calls `f(key, value)` for each of the `count` records in `records`, the
/// uncompressed records section of a v2 batch (after [`HEADER_BYTES`], or
/// what a compressed batch inflates to).
pub fn for_each_record<'a>(
    records: &'a [u8],
    count: i32,
    mut f: impl FnMut(Option<&'a [u8]>, Option<&'a [u8]>),
) -> Result<(), BatchError> {
    walk_records(records, count, |r| f(r.key, r.value))
}

/// One record of a records section, as [`walk_records`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The whole record, its length prefix included.
    pub bytes: &'a [u8],
}

/// Calls `f` for each of the `count` records in `records` (as
/// [`for_each_record`]), with its offset delta and its bytes.
pub fn walk_records<'a>(records: &'a [u8], count: i32, mut f: impl FnMut(RawRecord<'a>)) -> Result<(), BatchError> {
    let mut at = 0;
    for index in 0..count.max(0) {
        let bad = || BatchError::BadRecord { index };
        let start = at;
        let len = get_varint(records, &mut at).ok_or_else(bad)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= records.len())
            .ok_or_else(bad)?;
        let rec = &records[..end];
        let mut r = at + 1; // attributes
        get_varint(rec, &mut r).ok_or_else(bad)?; // timestamp delta
        let offset_delta = get_varint(rec, &mut r).ok_or_else(bad)?;
        let key = bytes_field(rec, &mut r).ok_or_else(bad)?;
        let value = bytes_field(rec, &mut r).ok_or_else(bad)?;
        f(RawRecord {
            offset_delta,
            key,
            value,
            bytes: &records[start..end],
        });
        at = end;
    }
    Ok(())
}

/// A varint-length byte field; `Some(None)` is null.
fn bytes_field<'a>(rec: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let n = get_varint(rec, at)?;
    if n < 0 {
        return Some(None);
    }
    let end = at.checked_add(usize::try_from(n).ok()?).filter(|&e| e <= rec.len())?;
    let field = &rec[*at..end];
    *at = end;
    Some(Some(field))
}

fn put_bytes_field(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

/// The marker a control batch holds: its first record's key is a version
/// (0) and a type (0 abort, 1 commit). `None` for a batch that is not a
/// control batch, is compressed, or whose key is neither; such a control
/// batch (a type Kafka may add) marks nothing.
pub fn marker(batch: &[u8]) -> Option<Marker> {
    let h = BatchHeader::parse(batch).ok()?;
    if !h.is_control() || h.compression() != 0 || h.records_count() < 1 {
        return None;
    }
    let mut found = None;
    let records = batch.get(HEADER_BYTES..)?;
    // A control batch has one record; an error in it marks nothing.
    let _ = for_each_record(records, 1, |key, _| {
        found = match key {
            Some(k) if k.len() >= 4 && i16_at(k, 0) == 0 => match i16_at(k, 2) {
                0 => Some(Marker::Abort),
                1 => Some(Marker::Commit),
                _ => None,
            },
            _ => None,
        };
    });
    found
}

/// A transaction marker as a partition leader writes it: one control
/// record, key (version 0, type), value (version 0, the coordinator's
/// epoch), in a transactional control batch of the producer, with no
/// sequence.
pub fn build_marker(
    marker: Marker,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    timestamp: i64,
) -> BytesMut {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&marker.kind().to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record {
        timestamp,
        key: Some(key),
        value: Some(value),
        headers: Vec::new(),
    };
    let producer = ProducerFields {
        producer_id,
        producer_epoch,
        base_sequence: -1,
    };
    build_with(&[record], producer, TRANSACTIONAL | CONTROL)
}

/// Encodes an uncompressed v2 batch with a valid CRC and baseOffset 0, as a
/// producer would. Used by tests, benchmarks and tools; not on the broker's
/// produce path, which stores what clients send.
pub fn build(records: &[Record], producer: ProducerFields) -> BytesMut {
    build_with(records, producer, 0)
}

/// [`build`] with the given attribute bits (no compression), such as
/// [`TRANSACTIONAL`].
pub fn build_with(records: &[Record], producer: ProducerFields, attributes: i16) -> BytesMut {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let base_ts = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut body = BytesMut::new();
    let mut rec = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.put_i8(0);
        put_varint(&mut rec, r.timestamp - base_ts);
        put_varint(&mut rec, i as i64);
        put_bytes_field(&mut rec, r.key.as_deref());
        put_bytes_field(&mut rec, r.value.as_deref());
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes_field(&mut rec, Some(k.as_bytes()));
            put_bytes_field(&mut rec, v.as_deref());
        }
        put_varint(&mut body, rec.len() as i64);
        body.put_slice(&rec);
    }
    let mut out = BytesMut::with_capacity(HEADER_BYTES + body.len());
    put_header(&mut out, attributes, records.len() as i32, base_ts, max_ts, producer);
    out.put_slice(&body);
    seal(&mut out);
    out
}

/// A batch of `count` records with `value_len`-byte values and the given
/// timestamp: the shape benchmarks and property tests append.
pub fn build_simple(count: usize, value_len: usize, timestamp: i64) -> BytesMut {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            timestamp,
            key: None,
            value: Some(vec![(i % 251) as u8; value_len]),
            headers: Vec::new(),
        })
        .collect();
    build(&records, ProducerFields::NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BytesMut {
        build(
            &[
                Record {
                    timestamp: 1_000,
                    key: Some(b"k".to_vec()),
                    value: Some(b"hello".to_vec()),
                    headers: vec![("h".into(), Some(b"v".to_vec()))],
                },
                Record {
                    timestamp: 1_005,
                    key: None,
                    value: None,
                    headers: vec![],
                },
            ],
            ProducerFields::NONE,
        )
    }

    #[test]
    fn built_batch_validates_and_reports_fields() {
        let b = sample();
        let info = validate(&b, 1 << 20).unwrap();
        assert_eq!(info.len, b.len());
        assert_eq!(info.records_count, 2);
        assert_eq!(info.last_offset_delta, 1);
        assert_eq!(info.max_timestamp, 1_005);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_timestamp(), 1_000);
        assert_eq!(h.producer_id(), -1);
        assert_eq!(h.compression(), 0);
        assert!(!h.is_control() && !h.is_transactional());
    }

    #[test]
    fn a_marker_is_a_valid_control_batch_that_reads_back() {
        for m in [Marker::Abort, Marker::Commit] {
            let b = build_marker(m, 9, 3, 17, 1_000);
            validate(&b, 1 << 20).unwrap();
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id(), h.producer_epoch(), h.base_sequence()), (9, 3, -1));
            assert_eq!(marker(&b), Some(m));
        }
        assert_eq!(marker(&sample()), None, "a data batch is no marker");
        let data = build_with(&[Record::default()], ProducerFields::NONE, TRANSACTIONAL);
        assert!(BatchHeader::parse(&data).unwrap().is_transactional());
        assert_eq!(marker(&data), None);
    }

    #[test]
    fn assign_rewrites_offset_and_epoch_without_breaking_crc() {
        let mut b = sample();
        assign(&mut b, 42, 7);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset(), 42);
        assert_eq!(h.last_offset(), 43);
        assert_eq!(h.partition_leader_epoch(), 7);
        validate(&b, 1 << 20).unwrap();
    }

    #[test]
    fn short_buffer_is_truncated() {
        let b = sample();
        assert!(matches!(validate(&b[..60], 1 << 20), Err(BatchError::Truncated { .. })));
    }

    #[test]
    fn lying_length_is_rejected() {
        let b = sample();
        assert!(matches!(
            validate(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::LengthMismatch { .. })
        ));
        let mut neg = sample();
        neg[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate(&neg, 1 << 20),
            Err(BatchError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn oversized_batch_is_too_large() {
        let b = sample();
        assert_eq!(
            validate(&b, b.len() - 1),
            Err(BatchError::TooLarge {
                size: b.len(),
                max: b.len() - 1
            })
        );
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let mut b = sample();
        b[16] = 1;
        assert_eq!(validate(&b, 1 << 20), Err(BatchError::BadMagic(1)));
    }

    #[test]
    fn flipped_record_byte_fails_crc() {
        let mut b = sample();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        assert!(matches!(validate(&b, 1 << 20), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn inconsistent_count_is_invalid_record() {
        let mut b = sample();
        b[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate(&b, 1 << 20),
            Err(BatchError::RecordCountMismatch {
                last_offset_delta: 1,
                records_count: 5
            })
        );
    }

    #[test]
    fn varint_encoding_matches_kafka_zigzag() {
        let mut out = BytesMut::new();
        for v in [0i64, -1, 1, 63, -64, 64, 300] {
            put_varint(&mut out, v);
        }
        assert_eq!(&out[..], &[0x00, 0x01, 0x02, 0x7e, 0x7f, 0x80, 0x01, 0xd8, 0x04]);
        for v in [0i64, 1, -1, 63, -64, 64, 300, i64::from(i32::MAX), i64::MIN, i64::MAX] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            let mut at = 0;
            assert_eq!(get_varint(&b, &mut at), Some(v));
            assert_eq!(at, b.len());
        }
        assert_eq!(get_varint(&[0x80, 0x80], &mut 0), None);
        assert_eq!(get_varint(&[0xff; 11], &mut 0), None);
    }

    #[test]
    fn records_walk_back_to_what_was_built() {
        let records = vec![
            Record {
                timestamp: 5,
                key: Some(b"k".to_vec()),
                value: None,
                headers: vec![("h".into(), Some(b"v".to_vec()))],
            },
            Record {
                timestamp: 6,
                key: None,
                value: Some(vec![7; 300]),
                headers: Vec::new(),
            },
        ];
        let b = build(&records, ProducerFields::NONE);
        let mut seen = Vec::new();
        for_each_record(&b[HEADER_BYTES..], 2, |k, v| {
            seen.push((k.map(<[u8]>::to_vec), v.map(<[u8]>::to_vec)))
        })
        .unwrap();
        assert_eq!(seen, vec![(Some(b"k".to_vec()), None), (None, Some(vec![7; 300]))]);
        // Every truncation is an error, never a panic or a short walk.
        for cut in 0..b.len() - HEADER_BYTES {
            let r = for_each_record(&b[HEADER_BYTES..HEADER_BYTES + cut], 2, |_, _| {});
            assert!(matches!(r, Err(BatchError::BadRecord { .. })), "{cut}");
        }
    }
}
