//! Compaction's record rules (`cleanup.policy=compact`): the offset map of
//! the latest offset of each key, and a batch rewritten to hold only the
//! records a cleaned log keeps.
//!
//! A cleaned batch keeps its base offset, its last offset delta, its
//! producer fields, its timestamps and its leader epoch; the records it
//! keeps are copied byte for byte (their offset and timestamp deltas stay
//! relative to the same base), so only the header's record count, length
//! and CRC change. A batch whose records are all removed becomes an empty
//! batch (a header with no records) covering the same offsets: the log
//! keeps the batches' bounds and still covers every offset, so reads,
//! indexes, recovery and followers see a contiguous log whose batches have
//! gaps inside them, as Kafka's clients expect of a compacted topic.
//!
//! A compressed batch is inflated through the owner's [`Codecs`] (the
//! engine knows the framing, not the codecs), filtered the same way, and
//! its kept records deflated again with the batch's codec. Without codecs,
//! or for a batch they cannot read, the batch is kept whole and its keys
//! stay out of the map: more is kept than needed, never less.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::{BufMut, BytesMut};

use crate::batch::{self, BatchError, BatchHeader, HEADER_BYTES, ProducerFields};

/// Bytes an entry of the map is counted as besides its key.
const ENTRY_OVERHEAD: usize = 48;

/// The latest offset of each key seen, within a memory budget.
#[derive(Debug)]
pub struct OffsetMap {
    latest: HashMap<Box<[u8]>, i64>,
    bytes: usize,
    limit: usize,
}

impl OffsetMap {
    /// A map that holds keys up to about `limit` bytes in all.
    pub fn new(limit: usize) -> Self {
        Self {
            latest: HashMap::new(),
            bytes: 0,
            limit,
        }
    }

    /// Notes `key` at `offset` (later offsets win); false, noting nothing,
    /// when a new key would pass the budget.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        if let Some(o) = self.latest.get_mut(key) {
            *o = (*o).max(offset);
            return true;
        }
        let cost = key.len() + ENTRY_OVERHEAD;
        if self.bytes + cost > self.limit {
            return false;
        }
        self.bytes += cost;
        self.latest.insert(key.into(), offset);
        true
    }

    /// The latest offset noted for `key`.
    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// The record codecs of compressed batches, supplied by the log's owner.
/// `codec` is the batch attributes' compression (1 gzip, 2 snappy, 3 lz4,
/// 4 zstd); `None` when the data cannot be read or written with it.
pub trait Codecs {
    fn inflate(&self, codec: u8, data: &[u8]) -> Option<Vec<u8>>;
    fn deflate(&self, codec: u8, data: &[u8]) -> Option<Vec<u8>>;
}

/// The records section of a data batch, inflated when compressed; `None`
/// for a control batch or one the codecs cannot read.
fn records_section<'b>(batch: &'b [u8], h: &BatchHeader<'_>, codecs: Option<&dyn Codecs>) -> Option<Cow<'b, [u8]>> {
    if h.is_control() {
        return None;
    }
    let section = batch.get(HEADER_BYTES..).unwrap_or_default();
    match h.compression() {
        0 => Some(Cow::Borrowed(section)),
        c => codecs?.inflate(c, section).map(Cow::Owned),
    }
}

/// One record of a batch as the cleaner sees it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    /// A null value: a tombstone, which deletes its key.
    pub tombstone: bool,
}

/// Calls `f(record, its bytes with their length prefix)` for each record of
/// a data batch (inflated through `codecs` when compressed); `Ok(false)`
/// without calling it for a control batch or a compressed one the codecs
/// cannot read.
pub fn walk_records(
    batch: &[u8],
    codecs: Option<&dyn Codecs>,
    mut f: impl FnMut(RecordView<'_>, &[u8]),
) -> Result<bool, BatchError> {
    let h = BatchHeader::parse(batch)?;
    let Some(records) = records_section(batch, &h, codecs) else {
        return Ok(false);
    };
    let base = h.base_offset();
    batch::walk_records(&records, h.records_count(), |r| {
        let view = RecordView {
            offset: base + r.offset_delta,
            key: r.key,
            tombstone: r.value.is_none(),
        };
        f(view, r.bytes);
    })?;
    Ok(true)
}

/// What cleaning made of one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Every record kept (or a batch the cleaner does not rewrite): the
    /// batch as it was.
    Unchanged,
    /// Some records removed: the batch holding the rest.
    Rewritten(BytesMut),
    /// Every record removed.
    Emptied,
}

/// Keeps the records of a data batch that `keep` says; a compressed one
/// is inflated through `codecs` and its kept records deflated again with
/// its codec (kept whole when either fails).
pub fn filter_batch(
    batch: &[u8],
    codecs: Option<&dyn Codecs>,
    mut keep: impl FnMut(&RecordView<'_>) -> bool,
) -> Result<Filtered, BatchError> {
    let h = BatchHeader::parse(batch)?;
    let Some(records) = records_section(batch, &h, codecs) else {
        return Ok(Filtered::Unchanged);
    };
    let base = h.base_offset();
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = 0usize;
    batch::walk_records(&records, h.records_count(), |r| {
        let view = RecordView {
            offset: base + r.offset_delta,
            key: r.key,
            tombstone: r.value.is_none(),
        };
        if keep(&view) {
            kept.push(r.bytes);
        } else {
            removed += 1;
        }
    })?;
    if removed == 0 {
        return Ok(Filtered::Unchanged);
    }
    if kept.is_empty() {
        return Ok(Filtered::Emptied);
    }
    let body: Vec<u8> = kept.concat();
    let body = match (h.compression(), codecs) {
        (0, _) => body,
        (c, Some(codecs)) => match codecs.deflate(c, &body) {
            Some(b) => b,
            None => return Ok(Filtered::Unchanged),
        },
        (_, None) => return Ok(Filtered::Unchanged),
    };
    let mut out = BytesMut::with_capacity(HEADER_BYTES + body.len());
    out.put_slice(&batch[..HEADER_BYTES]);
    out.put_slice(&body);
    set_records_count(&mut out, kept.len() as i32);
    batch::seal(&mut out);
    Ok(Filtered::Rewritten(out))
}

/// The record count in a batch's header (0 for one too short to have it).
pub fn records_in(batch: &[u8]) -> i32 {
    BatchHeader::parse(batch).map_or(0, |h| h.records_count())
}

/// Offset of recordsCount in a v2 batch header.
const RECORDS_COUNT_AT: usize = HEADER_BYTES - 4;

fn set_records_count(batch: &mut [u8], count: i32) {
    batch[RECORDS_COUNT_AT..HEADER_BYTES].copy_from_slice(&count.to_be_bytes());
}

/// An empty batch covering `base_offset..=last_offset`: the batch a cleaned
/// log keeps where every record of one or more batches was removed. With
/// `producer`, the header of a producer's last batch (its epoch and
/// sequences stay for the producer table); `attributes` carry the
/// transactional bit of such a batch.
pub fn empty_batch(
    base_offset: i64,
    last_offset: i64,
    leader_epoch: i32,
    timestamp: i64,
    producer: ProducerFields,
    attributes: i16,
) -> BytesMut {
    assert!(
        last_offset >= base_offset && last_offset - base_offset <= i64::from(i32::MAX),
        "an empty batch covers {base_offset}..={last_offset}"
    );
    let mut out = BytesMut::with_capacity(HEADER_BYTES);
    batch::put_header(&mut out, attributes, 1, timestamp, timestamp, producer);
    // put_header writes lastOffsetDelta = count - 1 and recordsCount =
    // count: set both for an empty batch of this span.
    let delta = (last_offset - base_offset) as i32;
    out[23..27].copy_from_slice(&delta.to_be_bytes());
    set_records_count(&mut out, 0);
    batch::seal(&mut out);
    batch::assign(&mut out, base_offset, leader_epoch);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Record, build};

    fn rec(key: &str, value: Option<&str>) -> Record {
        Record {
            timestamp: 1_000,
            key: Some(key.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: vec![("h".into(), Some(b"x".to_vec()))],
        }
    }

    fn at(base: i64, records: &[Record]) -> BytesMut {
        let mut b = build(records, ProducerFields::NONE);
        batch::assign(&mut b, base, 3);
        b
    }

    fn keys(batch: &[u8]) -> Vec<(i64, String, bool)> {
        let mut out = Vec::new();
        walk_records(batch, None, |r, _| {
            out.push((
                r.offset,
                String::from_utf8_lossy(r.key.unwrap_or_default()).into(),
                r.tombstone,
            ));
        })
        .unwrap();
        out
    }

    #[test]
    fn a_filtered_batch_keeps_offsets_header_fields_and_the_records_verbatim() {
        let b = at(
            100,
            &[
                rec("a", Some("1")),
                rec("b", Some("2")),
                rec("a", Some("3")),
                rec("c", None),
            ],
        );
        let Filtered::Rewritten(out) = filter_batch(&b, None, |r| r.offset != 100 && r.offset != 101).unwrap() else {
            panic!("records were removed");
        };
        let info = batch::validate_stored(&out, 1 << 20).unwrap();
        assert_eq!(info.records_count, 2);
        let h = BatchHeader::parse(&out).unwrap();
        let old = BatchHeader::parse(&b).unwrap();
        assert_eq!(
            (
                h.base_offset(),
                h.last_offset(),
                h.partition_leader_epoch(),
                h.max_timestamp(),
                h.base_timestamp()
            ),
            (
                old.base_offset(),
                old.last_offset(),
                old.partition_leader_epoch(),
                old.max_timestamp(),
                old.base_timestamp()
            )
        );
        assert_eq!(keys(&out), vec![(102, "a".into(), false), (103, "c".into(), true)]);
        let mut values = Vec::new();
        batch::for_each_record(&out[HEADER_BYTES..], 2, |_, v| values.push(v.map(<[u8]>::to_vec))).unwrap();
        assert_eq!(values, vec![Some(b"3".to_vec()), None]);
    }

    #[test]
    fn a_batch_with_nothing_removed_is_unchanged_and_one_with_everything_removed_empties() {
        let b = at(7, &[rec("a", Some("1")), rec("b", Some("2"))]);
        assert_eq!(filter_batch(&b, None, |_| true).unwrap(), Filtered::Unchanged);
        assert_eq!(filter_batch(&b, None, |_| false).unwrap(), Filtered::Emptied);
    }

    #[test]
    fn an_empty_batch_covers_its_offsets_with_no_records() {
        let producer = ProducerFields {
            producer_id: 9,
            producer_epoch: 2,
            base_sequence: 40,
        };
        let e = empty_batch(50, 59, 4, 1_234, producer, batch::TRANSACTIONAL);
        let info = batch::validate_stored(&e, 1 << 20).unwrap();
        assert_eq!(info.records_count, 0);
        assert!(
            batch::validate(&e, 1 << 20).is_err(),
            "no producer sends an empty batch"
        );
        let h = BatchHeader::parse(&e).unwrap();
        assert_eq!(
            (h.base_offset(), h.last_offset(), h.partition_leader_epoch()),
            (50, 59, 4)
        );
        assert_eq!((h.producer_id(), h.producer_epoch(), h.base_sequence()), (9, 2, 40));
        assert!(h.is_transactional());
        assert!(keys(&e).is_empty());
    }

    /// A stand-in codec 1: the bytes reversed.
    struct Reversed;

    impl Codecs for Reversed {
        fn inflate(&self, codec: u8, data: &[u8]) -> Option<Vec<u8>> {
            (codec == 1).then(|| data.iter().rev().copied().collect())
        }
        fn deflate(&self, codec: u8, data: &[u8]) -> Option<Vec<u8>> {
            self.inflate(codec, data)
        }
    }

    fn compressed(b: &[u8]) -> BytesMut {
        let mut out = BytesMut::from(&b[..HEADER_BYTES]);
        out.extend(b[HEADER_BYTES..].iter().rev());
        out[21..23].copy_from_slice(&1i16.to_be_bytes());
        batch::seal(&mut out);
        out
    }

    #[test]
    fn a_compressed_batch_is_inflated_filtered_and_deflated_with_its_codec() {
        let plain = at(10, &[rec("a", Some("1")), rec("b", Some("2")), rec("a", Some("3"))]);
        let b = compressed(&plain);
        assert_eq!(
            filter_batch(&b, None, |_| false).unwrap(),
            Filtered::Unchanged,
            "without codecs a compressed batch is kept whole"
        );
        let Filtered::Rewritten(out) = filter_batch(&b, Some(&Reversed), |r| r.offset != 10).unwrap() else {
            panic!("a record was removed");
        };
        let h = BatchHeader::parse(&out).unwrap();
        assert_eq!((h.compression(), h.records_count(), h.last_offset()), (1, 2, 12));
        batch::validate_stored(&out, 1 << 20).unwrap();
        let mut seen = Vec::new();
        assert!(walk_records(&out, Some(&Reversed), |r, _| seen.push(r.offset)).unwrap());
        assert_eq!(seen, vec![11, 12]);
        assert!(
            !walk_records(&out, None, |_, _| {}).unwrap(),
            "not walked without codecs"
        );
    }

    #[test]
    fn the_map_keeps_the_latest_offset_within_its_budget() {
        let mut m = OffsetMap::new(2 * (ENTRY_OVERHEAD + 1));
        assert!(m.put(b"a", 5));
        assert!(m.put(b"a", 3), "a known key is always noted");
        assert_eq!(m.latest(b"a"), Some(5));
        assert!(m.put(b"b", 6));
        assert!(!m.put(b"c", 7), "a third key passes the budget");
        assert_eq!((m.len(), m.latest(b"c")), (2, None));
    }
}
