//! Sparse indexes of one segment, kept in memory and mirrored to files.
//!
//! `.index`: 8-byte entries `relative_offset: u32 BE | position: u32 BE`,
//! strictly increasing in both, each pointing at the first byte of a batch
//! whose baseOffset is `segment_base + relative_offset`.
//!
//! `.timeindex`: 12-byte entries `timestamp: i64 BE | relative_offset: u32 BE`,
//! timestamps strictly increasing: "the batch at this offset raised the
//! segment's largest timestamp to this value".
//!
//! Both are hints: recovery validates them and rebuilds them from the log
//! when they disagree with it.

pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;

/// Offset index of one segment, owned by the segment (and so by the log's shard).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Decodes whole entries, keeping the longest prefix that is strictly
    /// increasing and points below `file_len`. A torn last entry is ignored.
    pub fn decode_prefix(bytes: &[u8], file_len: u64) -> (Self, bool) {
        let mut entries = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_BYTES);
        let mut clean = bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES);
        for e in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let rel = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let pos = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
            let ordered = entries.last().is_none_or(|&(r, p)| rel > r && pos > p);
            if !ordered || u64::from(pos) >= file_len {
                clean = false;
                break;
            }
            entries.push((rel, pos));
        }
        (Self { entries }, clean)
    }

    pub fn encode_from(&self, from: usize, out: &mut Vec<u8>) {
        for &(rel, pos) in &self.entries[from.min(self.entries.len())..] {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
    }

    pub fn push(&mut self, rel: u32, pos: u32) {
        assert!(
            self.entries.last().is_none_or(|&(r, p)| rel > r && pos > p),
            "offset index entries must increase"
        );
        self.entries.push((rel, pos));
    }

    pub fn pop(&mut self) -> Option<(u32, u32)> {
        self.entries.pop()
    }

    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last entry at or below `rel`: where a scan for `rel` starts.
    pub fn floor(&self, rel: u32) -> Option<(u32, u32)> {
        let i = self.entries.partition_point(|&(r, _)| r <= rel);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry whose position is at or below `pos`.
    pub fn floor_position(&self, pos: u32) -> Option<(u32, u32)> {
        let i = self.entries.partition_point(|&(_, p)| p <= pos);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops entries at or beyond relative offset `rel`.
    pub fn truncate_from_rel(&mut self, rel: u32) {
        let i = self.entries.partition_point(|&(r, _)| r < rel);
        self.entries.truncate(i);
    }
}

/// Time index of one segment, owned by the segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Decodes whole entries; `None` when they are not ordered or point at
    /// or past `rel_end`, so the caller rebuilds from the log.
    pub fn decode(bytes: &[u8], rel_end: u64) -> Option<Self> {
        let mut entries = Vec::with_capacity(bytes.len() / TIME_ENTRY_BYTES);
        for e in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&e[..8]);
            let ts = i64::from_be_bytes(ts);
            let rel = u32::from_be_bytes([e[8], e[9], e[10], e[11]]);
            let ordered = entries.last().is_none_or(|&(t, r)| ts > t && rel >= r);
            if !ordered || u64::from(rel) >= rel_end {
                return None;
            }
            entries.push((ts, rel));
        }
        Some(Self { entries })
    }

    pub fn encode_from(&self, from: usize, out: &mut Vec<u8>) {
        for &(ts, rel) in &self.entries[from.min(self.entries.len())..] {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
    }

    /// Adds an entry if `ts` raises the largest timestamp indexed so far.
    pub fn push_if_newer(&mut self, ts: i64, rel: u32) -> bool {
        if self.entries.last().is_none_or(|&(t, _)| ts > t) {
            self.entries.push((ts, rel));
            true
        } else {
            false
        }
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last entry with a timestamp below `ts`: every batch up to and
    /// including it is older than `ts`, so a search can start there.
    pub fn last_below(&self, ts: i64) -> Option<(i64, u32)> {
        let i = self.entries.partition_point(|&(t, _)| t < ts);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn truncate_from_rel(&mut self, rel: u32) {
        let i = self.entries.partition_point(|&(_, r)| r < rel);
        self.entries.truncate(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_round_trips_and_finds_floor() {
        let mut idx = OffsetIndex::default();
        idx.push(0, 0);
        idx.push(10, 4096);
        idx.push(25, 9000);
        let mut bytes = Vec::new();
        idx.encode_from(0, &mut bytes);
        let (back, clean) = OffsetIndex::decode_prefix(&bytes, 10_000);
        assert!(clean);
        assert_eq!(back, idx);
        assert_eq!(idx.floor(9), Some((0, 0)));
        assert_eq!(idx.floor(10), Some((10, 4096)));
        assert_eq!(idx.floor(1000), Some((25, 9000)));
        assert_eq!(idx.floor_position(5000), Some((10, 4096)));
    }

    #[test]
    fn offset_index_keeps_valid_prefix_of_damaged_file() {
        let mut bytes = Vec::new();
        for (rel, pos) in [(0u32, 0u32), (5, 100), (3, 200)] {
            bytes.extend_from_slice(&rel.to_be_bytes());
            bytes.extend_from_slice(&pos.to_be_bytes());
        }
        bytes.push(0xff); // torn trailing entry
        let (idx, clean) = OffsetIndex::decode_prefix(&bytes, 1_000);
        assert!(!clean);
        assert_eq!(idx.len(), 2);
        let (idx, clean) = OffsetIndex::decode_prefix(&bytes[..16], 100);
        assert!(!clean, "entry at position 100 is past a 100-byte file");
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn time_index_rejects_unordered_entries() {
        let mut t = TimeIndex::default();
        assert!(t.push_if_newer(10, 0));
        assert!(!t.push_if_newer(10, 1));
        assert!(t.push_if_newer(20, 4));
        let mut bytes = Vec::new();
        t.encode_from(0, &mut bytes);
        assert_eq!(TimeIndex::decode(&bytes, 5), Some(t.clone()));
        assert_eq!(TimeIndex::decode(&bytes, 4), None, "entry beyond the segment end");
        assert_eq!(t.last_below(15), Some((10, 0)));
        assert_eq!(t.last_below(10), None);
        t.truncate_from_rel(4);
        assert_eq!(t.len(), 1);
    }
}
