//! The generator's data path, encoded by hand so that it costs no
//! allocation per message: record batches (v2) written straight into a
//! reused request buffer, Produce requests (v3–v8 share one layout), the
//! record walk that consumers use for end-to-end latency, and framing.

use std::io::{self, Read, Write};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use compio::BufResult;
use compio::buf::{IntoInner, IoBufMut};
use compio::io::AsyncRead;
use compio::net::TcpStream;

use sluice_engine::batch::{self, BatchHeader, ProducerFields, put_varint, varint_len};

use crate::workload::Compression;

/// The records of one partition's open batch, not yet framed.
#[derive(Debug, Default)]
pub struct OpenBatch {
    pub records: BytesMut,
    pub count: u32,
    /// Intended send time of each message, µs since the epoch.
    pub times: Vec<u64>,
    pub first_us: u64,
    pub payload_bytes: u64,
}

impl OpenBatch {
    /// Appends one record: null or given key, the value's first 8 bytes
    /// replaced by `intended_us`, the rest from `payload`.
    pub fn push(&mut self, key: Option<&[u8]>, intended_us: u64, payload: &[u8]) {
        if self.count == 0 {
            self.first_us = intended_us;
        }
        let offset_delta = i64::from(self.count);
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let value_len = payload.len() as i64;
        let body = 1 // attributes
            + 1 // timestamp delta 0
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map_or(0, <[u8]>::len)
            + varint_len(value_len)
            + payload.len()
            + 1; // no headers
        let r = &mut self.records;
        r.reserve(body + 5);
        put_varint(r, body as i64);
        r.put_u8(0);
        put_varint(r, 0);
        put_varint(r, offset_delta);
        put_varint(r, key_len);
        if let Some(k) = key {
            r.put_slice(k);
        }
        put_varint(r, value_len);
        r.put_u64(intended_us);
        r.put_slice(&payload[8..]);
        put_varint(r, 0);
        self.count += 1;
        self.times.push(intended_us);
        self.payload_bytes += payload.len() as u64 + key.map_or(0, |k| k.len() as u64);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.count = 0;
        self.times.clear();
        self.payload_bytes = 0;
    }
}

/// Reused compression state.
#[derive(Default)]
pub struct Codec {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Codec {
    /// Compresses `records` into `out` (appended).
    fn compress(&mut self, kind: Compression, records: &[u8], out: &mut BytesMut) -> io::Result<()> {
        match kind {
            Compression::None => out.put_slice(records),
            Compression::Lz4 => {
                self.scratch.clear();
                let mut enc = lz4::EncoderBuilder::new()
                    .level(1)
                    .block_mode(lz4::BlockMode::Independent)
                    .build(&mut self.scratch)?;
                enc.write_all(records)?;
                let (_, r) = enc.finish();
                r?;
                out.put_slice(&self.scratch);
            }
            Compression::Zstd => {
                let z = match &mut self.zstd {
                    Some(z) => z,
                    None => self.zstd.insert(zstd::bulk::Compressor::new(1)?),
                };
                self.scratch.clear();
                self.scratch.reserve(zstd::zstd_safe::compress_bound(records.len()));
                z.compress_to_buffer(records, &mut self.scratch)?;
                out.put_slice(&self.scratch);
            }
        }
        Ok(())
    }
}

/// Appends one v2 record batch holding `b`'s records to `out`.
pub fn put_batch(
    out: &mut BytesMut,
    b: &OpenBatch,
    timestamp_ms: i64,
    compression: Compression,
    codec: &mut Codec,
) -> io::Result<()> {
    let start = out.len();
    let count = b.count as i32;
    batch::put_header(
        out,
        compression.attribute(),
        count,
        timestamp_ms,
        timestamp_ms,
        ProducerFields::NONE,
    );
    codec.compress(compression, &b.records, out)?;
    batch::seal(&mut out[start..]);
    Ok(())
}

/// Starts a request frame: the length (patched by [`end_frame`]) and a
/// v1 request header.
pub fn begin_frame(out: &mut BytesMut, api_key: i16, version: i16, correlation: i32, client_id: &str) {
    out.clear();
    out.put_i32(0);
    out.put_i16(api_key);
    out.put_i16(version);
    out.put_i32(correlation);
    out.put_i16(client_id.len() as i16);
    out.put_slice(client_id.as_bytes());
}

pub fn end_frame(out: &mut BytesMut) {
    let n = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&n.to_be_bytes());
}

/// One batch of a Produce request.
#[derive(Debug)]
pub struct PartitionBatch<'a> {
    pub partition: i32,
    pub batch: &'a OpenBatch,
}

/// Writes a whole Produce request (v3–v8, one topic) into `out`.
#[allow(clippy::too_many_arguments)]
pub fn produce_request(
    out: &mut BytesMut,
    version: i16,
    correlation: i32,
    acks: i16,
    timeout_ms: i32,
    topic: &str,
    batches: &[PartitionBatch<'_>],
    timestamp_ms: i64,
    compression: Compression,
    codec: &mut Codec,
) -> io::Result<()> {
    begin_frame(out, 0, version, correlation, "sluice-bench");
    out.put_i16(-1); // no transactional id
    out.put_i16(acks);
    out.put_i32(timeout_ms);
    out.put_i32(1);
    out.put_i16(topic.len() as i16);
    out.put_slice(topic.as_bytes());
    out.put_i32(batches.len() as i32);
    for pb in batches {
        out.put_i32(pb.partition);
        let len_at = out.len();
        out.put_i32(0);
        put_batch(out, pb.batch, timestamp_ms, compression, codec)?;
        let n = (out.len() - len_at - 4) as i32;
        out[len_at..len_at + 4].copy_from_slice(&n.to_be_bytes());
    }
    end_frame(out);
    Ok(())
}

/// What a consumer saw in one partition's records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    pub records: u64,
    pub bytes: u64,
    /// Offset after the last whole batch.
    pub next_offset: Option<i64>,
}

/// Walks the whole batches in `data`, calling `f` with the send time in
/// each record's value (records whose value is shorter than 8 bytes are
/// counted but not timed). Compressed batches are inflated into `scratch`.
/// A trailing partial batch is ignored, as Kafka clients do.
pub fn walk_records(data: &[u8], scratch: &mut Vec<u8>, mut f: impl FnMut(u64)) -> Result<Walked, String> {
    let mut w = Walked::default();
    let mut at = 0;
    while let Ok(h) = BatchHeader::parse(&data[at..]) {
        let total = h
            .total_len()
            .filter(|&t| t >= batch::HEADER_BYTES)
            .ok_or_else(|| format!("batch length {}", h.batch_length()))?;
        if data.len() - at < total {
            break;
        }
        if h.magic() != batch::MAGIC_V2 {
            return Err(format!("magic {}", h.magic()));
        }
        let body = &data[at + batch::HEADER_BYTES..at + total];
        w.next_offset = Some(h.last_offset() + 1);
        at += total;
        if h.is_control() {
            continue;
        }
        let records: &[u8] = match h.compression() {
            0 => body,
            3 => {
                scratch.clear();
                lz4::Decoder::new(body)
                    .and_then(|mut d| d.read_to_end(scratch))
                    .map_err(|e| format!("lz4: {e}"))?;
                scratch
            }
            4 => {
                scratch.clear();
                zstd::stream::read::Decoder::new(body)
                    .and_then(|mut d| d.read_to_end(scratch))
                    .map_err(|e| format!("zstd: {e}"))?;
                scratch
            }
            c => return Err(format!("compression codec {c} is not supported")),
        };
        batch::for_each_record(records, h.records_count(), |key, value| {
            let value = value.unwrap_or(&[]);
            if let Some(ts) = value.first_chunk::<8>() {
                f(u64::from_be_bytes(*ts));
            }
            w.records += 1;
            w.bytes += (value.len() + key.map_or(0, <[u8]>::len)) as u64;
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(w)
}

/// Reads length-prefixed frames from a stream into one reused buffer.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    max: usize,
}

impl FrameReader {
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(256 * 1024),
            max,
        }
    }

    /// The next frame without its length prefix; `None` at a clean EOF.
    pub async fn next(&mut self, stream: &mut TcpStream) -> io::Result<Option<Bytes>> {
        loop {
            if self.buf.len() >= 4 {
                let n = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= self.max)
                    .ok_or_else(|| io::Error::other(format!("response length {n}")))?;
                if self.buf.len() >= 4 + n {
                    self.buf.advance(4);
                    return Ok(Some(self.buf.split_to(n).freeze()));
                }
                self.buf.reserve(4 + n - self.buf.len());
            }
            if self.buf.capacity() - self.buf.len() < 64 * 1024 {
                self.buf.reserve(256 * 1024);
            }
            // Read into the spare capacity after the bytes already held.
            let owned = std::mem::take(&mut self.buf);
            let BufResult(r, back) = stream.read(owned.uninit()).await;
            self.buf = back.into_inner();
            if r? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a response"))
                };
            }
        }
    }
}

/// Kafka's murmur2 (the default partitioner's hash of a key).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a key.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn batches_walk_back_to_their_send_times_in_every_codec() {
        let p = payload(100);
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut b = OpenBatch::default();
            for i in 0..200u64 {
                let key = (i % 3 == 0).then_some(&b"key"[..]);
                b.push(key, 1_000_000 + i, &p);
            }
            let mut out = BytesMut::new();
            let mut codec = Codec::default();
            put_batch(&mut out, &b, 1_700_000_000_000, c, &mut codec).unwrap();
            put_batch(&mut out, &b, 1_700_000_000_000, c, &mut codec).unwrap();
            // The broker's own validation accepts it.
            let h = sluice_engine_check(&out[..out.len() / 2]);
            assert_eq!(h, 200, "{c:?}");
            let mut seen = Vec::new();
            let w = walk_records(&out, &mut Vec::new(), |t| seen.push(t)).unwrap();
            assert_eq!(w.records, 400, "{c:?}");
            assert_eq!(seen[..200], (0..200).map(|i| 1_000_000 + i).collect::<Vec<_>>()[..]);
            assert_eq!(w.next_offset, Some(200));
            // A partial trailing batch is left for the next fetch.
            let w = walk_records(&out[..out.len() - 1], &mut Vec::new(), |_| {}).unwrap();
            assert_eq!(w.records, 200);
        }
    }

    /// Record count of a batch as the broker's validation reads it.
    fn sluice_engine_check(batch: &[u8]) -> i32 {
        sluice_engine::batch::validate(batch, 1 << 30).unwrap().records_count
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        let p = payload(16);
        let mut b = OpenBatch::default();
        b.push(None, 5, &p);
        let mut out = BytesMut::new();
        put_batch(&mut out, &b, 0, Compression::None, &mut Codec::default()).unwrap();
        for cut in batch::HEADER_BYTES..out.len() {
            let mut bad = out.to_vec();
            bad[8..12].copy_from_slice(&((cut - 12) as i32).to_be_bytes());
            let _ = walk_records(&bad[..cut], &mut Vec::new(), |_| {});
        }
        let mut bad = out.to_vec();
        bad[16] = 1;
        assert!(walk_records(&bad, &mut Vec::new(), |_| {}).is_err());
        let mut bad = out.to_vec();
        bad[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert!(walk_records(&bad, &mut Vec::new(), |_| {}).is_err());
    }

    #[test]
    fn murmur2_matches_kafkas_partitioner() {
        // Values from Kafka's UtilsTest.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn produce_request_layout() {
        let p = payload(32);
        let mut b = OpenBatch::default();
        b.push(None, 7, &p);
        let mut out = BytesMut::new();
        let batches = [PartitionBatch {
            partition: 3,
            batch: &b,
        }];
        produce_request(
            &mut out,
            8,
            42,
            -1,
            30_000,
            "t",
            &batches,
            0,
            Compression::None,
            &mut Codec::default(),
        )
        .unwrap();
        let mut body = Bytes::copy_from_slice(&out[4..]);
        assert_eq!(out.len() - 4, i32::from_be_bytes(out[..4].try_into().unwrap()) as usize);
        use kafka_protocol::messages::{ProduceRequest, RequestHeader};
        use kafka_protocol::protocol::Decodable;
        let h = RequestHeader::decode(&mut body, 1).unwrap();
        assert_eq!((h.request_api_key, h.request_api_version, h.correlation_id), (0, 8, 42));
        let r = ProduceRequest::decode(&mut body, 8).unwrap();
        assert_eq!(r.acks, -1);
        assert_eq!(r.topic_data[0].name.as_str(), "t");
        let pd = &r.topic_data[0].partition_data[0];
        assert_eq!(pd.index, 3);
        let w = walk_records(pd.records.as_ref().unwrap(), &mut Vec::new(), |t| assert_eq!(t, 7)).unwrap();
        assert_eq!(w.records, 1);
    }
}
