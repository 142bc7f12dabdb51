//! Request mutation for fuzzing Kafka-protocol brokers: seed frames (real
//! clients' requests captured by `tests/fuzz/capture.py`, plus a default
//! request of every supported API and version), a seeded mutator, and the
//! framing. Used by the broker's in-process fuzz test and by
//! `sluice-wire-fuzz`, which sends the frames over TCP.

use std::path::Path;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

/// xorshift64*: small, fast and reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Reads every `*.frames` file in `dir`: each a run of 4-byte big-endian
/// lengths and frames. Returns the frames without their length.
pub fn load_corpus(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "frames"))
        .collect();
    paths.sort();
    for path in paths {
        let bytes = std::fs::read(&path)?;
        let mut at = 0;
        while at + 4 <= bytes.len() {
            let n = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
            let Some(frame) = bytes.get(at + 4..at + 4 + n) else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: truncated frame at byte {at}", path.display()),
                ));
            };
            frames.push(frame.to_vec());
            at += 4 + n;
        }
    }
    Ok(frames)
}

/// Encodes a default (empty) request of `key` at `version` into `buf`, for
/// the APIs Sluice serves; `None` for others or versions the codec cannot
/// write.
fn put_default_request(key: ApiKey, version: i16, buf: &mut BytesMut) -> Option<()> {
    macro_rules! put {
        ($t:ty) => {
            <$t>::default().encode(buf, version).ok()
        };
    }
    match key {
        ApiKey::Produce => put!(ProduceRequest),
        ApiKey::Fetch => put!(FetchRequest),
        ApiKey::ListOffsets => put!(ListOffsetsRequest),
        ApiKey::Metadata => put!(MetadataRequest),
        ApiKey::ApiVersions => put!(ApiVersionsRequest),
        ApiKey::CreateTopics => put!(CreateTopicsRequest),
        ApiKey::DeleteTopics => put!(DeleteTopicsRequest),
        ApiKey::DeleteRecords => put!(DeleteRecordsRequest),
        ApiKey::InitProducerId => put!(InitProducerIdRequest),
        ApiKey::DescribeConfigs => put!(DescribeConfigsRequest),
        ApiKey::AlterConfigs => put!(AlterConfigsRequest),
        ApiKey::CreatePartitions => put!(CreatePartitionsRequest),
        ApiKey::IncrementalAlterConfigs => put!(IncrementalAlterConfigsRequest),
        ApiKey::DescribeCluster => put!(DescribeClusterRequest),
        ApiKey::FindCoordinator => put!(FindCoordinatorRequest),
        ApiKey::JoinGroup => put!(JoinGroupRequest),
        ApiKey::SyncGroup => put!(SyncGroupRequest),
        ApiKey::Heartbeat => put!(HeartbeatRequest),
        ApiKey::LeaveGroup => put!(LeaveGroupRequest),
        ApiKey::OffsetCommit => put!(OffsetCommitRequest),
        ApiKey::OffsetFetch => put!(OffsetFetchRequest),
        ApiKey::OffsetDelete => put!(OffsetDeleteRequest),
        ApiKey::ListGroups => put!(ListGroupsRequest),
        ApiKey::DescribeGroups => put!(DescribeGroupsRequest),
        ApiKey::DeleteGroups => put!(DeleteGroupsRequest),
        ApiKey::DescribeLogDirs => put!(DescribeLogDirsRequest),
        ApiKey::DescribeTopicPartitions => put!(DescribeTopicPartitionsRequest),
        _ => None,
    }
}

/// One frame (without its length) of a default request of `key` at
/// `version`, if the codec can write it.
pub fn default_frame(key: ApiKey, version: i16, correlation_id: i32) -> Option<Vec<u8>> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("sluice-fuzz"));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, key.request_header_version(version)).ok()?;
    put_default_request(key, version, &mut buf)?;
    Some(buf.to_vec())
}

/// Seeds for every version of every `(api key, min, max)` given: a
/// default request each.
pub fn default_frames(apis: &[(i16, i16, i16)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for &(key, lo, hi) in apis {
        let Ok(key) = ApiKey::try_from(key) else { continue };
        for v in lo..=hi {
            out.extend(default_frame(key, v, 1));
        }
    }
    out
}

/// Values that sit on the edges decoders get wrong.
const INTERESTING: &[i64] = &[
    0,
    1,
    -1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    -0x8000_0000,
    0xffff_ffff,
    i64::MAX,
    i64::MIN,
];

/// Mutates seed frames. The first 8 bytes (API key, version, correlation
/// id) are mostly kept, so most mutations reach the body decoders and
/// handlers of every API and version; now and then they change too.
#[derive(Debug)]
pub struct Mutator {
    seeds: Vec<Vec<u8>>,
    rng: Rng,
}

impl Mutator {
    pub fn new(seeds: Vec<Vec<u8>>, seed: u64) -> Self {
        assert!(!seeds.is_empty(), "a mutator needs seed frames");
        Self {
            seeds,
            rng: Rng::new(seed),
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A mutated frame, without its length prefix.
    pub fn next_frame(&mut self) -> Vec<u8> {
        let mut f = self.seeds[self.rng.below(self.seeds.len())].clone();
        let rounds = 1 + self.rng.below(4);
        for _ in 0..rounds {
            self.mutate(&mut f);
        }
        f
    }

    fn pos(&mut self, len: usize, keep_header: bool) -> usize {
        let from = if keep_header && len > 8 && self.rng.below(16) != 0 {
            8
        } else {
            0
        };
        from + self.rng.below(len.saturating_sub(from).max(1))
    }

    fn mutate(&mut self, f: &mut Vec<u8>) {
        if f.is_empty() {
            f.push(0);
        }
        let len = f.len();
        match self.rng.below(9) {
            0 => {
                let p = self.pos(len, true);
                f[p] ^= 1 << self.rng.below(8);
            }
            1 => {
                let p = self.pos(len, true);
                f[p] = self.rng.next_u64() as u8;
            }
            2 => {
                // An interesting integer, big-endian, 1, 2, 4 or 8 bytes wide.
                let width = [1usize, 2, 4, 8][self.rng.below(4)];
                let v = INTERESTING[self.rng.below(INTERESTING.len())].to_be_bytes();
                let p = self.pos(len, true);
                for (i, b) in v[8 - width..].iter().enumerate() {
                    if let Some(slot) = f.get_mut(p + i) {
                        *slot = *b;
                    }
                }
            }
            3 => {
                let cut = self.pos(len, true);
                f.truncate(cut.max(1));
            }
            4 => {
                let p = self.pos(len, true);
                let n = 1 + self.rng.below(16);
                let end = (p + n).min(f.len());
                f.drain(p..end);
            }
            5 => {
                let p = self.pos(len, true);
                let n = 1 + self.rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                f.splice(p..p, bytes);
            }
            6 => {
                // Duplicate a run (repeated array elements, records).
                let p = self.pos(len, true);
                let n = 1 + self.rng.below(64.min(len - p));
                let run = f[p..p + n].to_vec();
                let at = self.pos(f.len(), true);
                f.splice(at..at, run);
            }
            7 => {
                // Splice the tail of another seed.
                let p = self.pos(len, true);
                let other = &self.seeds[self.rng.below(self.seeds.len())];
                let from = self.rng.below(other.len());
                f.truncate(p);
                f.extend_from_slice(&other[from..]);
            }
            _ => {
                // A varint of 0xff bytes: unsigned varints that never end.
                let p = self.pos(len, true);
                let n = 1 + self.rng.below(6);
                f.splice(p..p, std::iter::repeat_n(0xffu8, n));
            }
        }
    }
}

/// `frame` with its 4-byte length, which is now and then wrong (off by
/// one, too long, negative) to exercise the framing.
pub fn framed(frame: &[u8], rng: &mut Rng) -> Vec<u8> {
    let len = frame.len() as i32;
    let claimed = match rng.below(64) {
        0 => len + 1,
        1 => len - 1,
        2 => -1,
        3 => i32::MAX,
        _ => len,
    };
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.put_i32(claimed);
    out.extend_from_slice(frame);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_frames() {
        let seeds = default_frames(&[(ApiKey::Metadata as i16, 0, 12), (ApiKey::Fetch as i16, 4, 16)]);
        assert_eq!(seeds.len(), 13 + 13);
        let run = |seed| {
            let mut m = Mutator::new(seeds.clone(), seed);
            (0..100).map(|_| m.next_frame()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let mut m = Mutator::new(seeds.clone(), 3);
        let changed = (0..1000).filter(|_| !seeds.contains(&m.next_frame())).count();
        assert!(changed > 900, "mutations change frames: {changed}");
    }

    #[test]
    fn the_captured_corpus_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus");
        let frames = load_corpus(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(frames.len() > 100, "{}", frames.len());
        // Fetch is among them.
        assert!(frames.iter().any(|f| f[..2] == [0, 1]));
    }
}
