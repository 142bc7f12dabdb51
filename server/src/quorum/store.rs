//! The metadata log and the vote on disk, for the Raft library.
//!
//! `dir/log` holds the entries as frames: a little-endian u32 length, a
//! CRC-32C of the body, and the body (the entry as JSON). Appends are
//! written at the end and fdatasynced before the library is told they are
//! durable. A torn or corrupt frame at the end (a crash mid-append) is cut
//! off at open; one in the middle refuses the open. Truncation and purging
//! rewrite the file through a temporary file and a rename, so a crash
//! leaves the old log or the new one. The vote, the last purged log id and
//! the committed log id are small JSON files replaced the same way.
//!
//! The metadata log is small (snapshots bound it), so every entry is also
//! kept in memory; reads never touch the disk.
//!
//! A write that finds the disk full waits for room and tries again
//! ([`until_room`]): openraft would take the error as fatal.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};
use serde::Serialize;
use sluice_engine::durable_file::{self, Replace};

use super::MetaRaft;
use crate::base::files::read_json;

type Entry = EntryOf<MetaRaft>;
type LogId = LogIdOf<MetaRaft>;
type Vote = VoteOf<MetaRaft>;

/// Bodies above this are refused: a metadata entry is a few KiB at most.
const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    purged: Option<LogId>,
    committed: Option<LogId>,
    /// The length of the log file's whole frames: appends write from here
    /// (over anything a failed attempt left).
    len: u64,
}

/// The log store; cheap to clone (its readers share the entries).
#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
    inner: Rc<RefCell<Inner>>,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()))
}

/// Replaces `path` with `bytes`, durably (the engine's one helper).
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    durable_file::replace_file(path, bytes, Replace::Durable)
}

/// ENOSPC or EDQUOT: the disk, or the user's quota, is full.
fn is_full(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::NOSPC, Errno::DQUOT]
        .iter()
        .any(|c| e.raw_os_error() == Some(c.raw_os_error()))
}

/// How often a metadata write that met a full disk tries again.
const ROOM_RETRY: Duration = Duration::from_millis(200);

/// Runs `op` on the blocking pool until it does not fail for want of space,
/// and returns what it returned then.
///
/// openraft takes any error of its storage as fatal: the node stops for
/// good, and with it this voter's vote and this node's view of the
/// metadata. A full disk is not that. A metadata write that meets one waits
/// for room, as a write to a slow disk would, and the quorum goes on
/// without this voter meanwhile. `op` must be safe to run again after it
/// failed: it rewrites whatever a failed attempt left.
pub(super) async fn until_room<T, F>(what: &'static str, op: F) -> io::Result<T>
where
    F: Fn() -> io::Result<T> + Clone + Send + 'static,
    T: Send + 'static,
{
    let mut waited = false;
    loop {
        let result = compio::runtime::spawn_blocking(op.clone())
            .await
            .unwrap_or_else(|_| Err(io::Error::other(format!("{what}: the write task panicked"))));
        match result {
            Err(e) if is_full(&e) => {
                if !waited {
                    tracing::warn!(what, error = %e, "no room for a metadata write: trying again until there is");
                    waited = true;
                }
                compio::runtime::time::sleep(ROOM_RETRY).await;
            }
            result => {
                if waited && result.is_ok() {
                    tracing::info!(what, "metadata write done once there was room");
                }
                return result;
            }
        }
    }
}

/// Replaces `path` with `value` as JSON ([`replace_file`]), waiting for
/// room on a full disk ([`until_room`]).
pub(super) async fn save_json<T: Serialize>(what: &'static str, path: PathBuf, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    replace_when_room(what, path, bytes).await
}

/// [`replace_file`], waiting for room on a full disk ([`until_room`]).
async fn replace_when_room(what: &'static str, path: PathBuf, bytes: Vec<u8>) -> io::Result<()> {
    let bytes = Arc::new(bytes);
    until_room(what, move || replace_file(&path, &bytes)).await
}

fn frame(entry: &Entry, out: &mut Vec<u8>) -> io::Result<()> {
    let body = serde_json::to_vec(entry).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("metadata entry above 4 GiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Parses the frames of a log file. Returns the entries and the length of
/// the valid prefix: a torn or corrupt last frame (a crash mid-append) is
/// left out; a bad frame before the last is an error.
fn parse(path: &Path, bytes: &[u8]) -> io::Result<(Vec<Entry>, usize)> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let len = rest
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let body = len.and_then(|len| rest.get(8..8 + len));
        let Some(body) = body else {
            tracing::warn!(file = %path.display(), offset = at, "cutting a torn metadata log tail");
            break;
        };
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if body.len() > MAX_FRAME {
            return Err(invalid(path, format!("frame of {} bytes at offset {at}", body.len())));
        }
        if crc32c::crc32c(body) != crc {
            if 8 + body.len() == rest.len() {
                tracing::warn!(file = %path.display(), offset = at, "cutting a corrupt metadata log tail");
                break;
            }
            return Err(invalid(path, format!("checksum mismatch at offset {at}")));
        }
        let entry: Entry = serde_json::from_slice(body).map_err(|e| invalid(path, e))?;
        if let Some(prev) = entries.last().map(RaftEntry::index)
            && entry.index() != prev + 1
        {
            return Err(invalid(path, format!("entry {} follows entry {prev}", entry.index())));
        }
        entries.push(entry);
        at += 8 + body.len();
    }
    Ok((entries, at))
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("log");
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (entries, valid) = parse(&path, &bytes)?;
        if valid < bytes.len() {
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(valid as u64)?;
            f.sync_all()?;
        }
        let inner = Inner {
            entries: entries.into_iter().map(|e| (e.index(), e)).collect(),
            vote: read_json(&dir.join("vote"))?,
            purged: read_json(&dir.join("purged"))?,
            // Only a hint (it saves re-applying at start); a torn file is
            // read as "not known".
            committed: read_json(&dir.join("committed")).unwrap_or(None),
            len: valid as u64,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Rc::new(RefCell::new(inner)),
        })
    }

    /// The voters (id → address) of the newest membership entry in the
    /// log, if it holds one.
    pub fn last_membership(&self) -> Option<BTreeMap<u64, String>> {
        self.inner
            .borrow()
            .entries
            .values()
            .rev()
            .find_map(|e| match &e.payload {
                openraft::EntryPayload::Membership(m) => Some(m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect()),
                _ => None,
            })
    }

    /// True when this node has never voted nor held an entry.
    pub fn is_pristine(&self) -> bool {
        let inner = self.inner.borrow();
        inner.vote.is_none() && inner.entries.is_empty() && inner.purged.is_none()
    }

    /// Writes the whole log again (after a truncation or a purge).
    async fn rewrite(&self) -> io::Result<()> {
        let mut bytes = Vec::new();
        for e in self.inner.borrow().entries.values() {
            frame(e, &mut bytes)?;
        }
        let len = bytes.len() as u64;
        replace_when_room("metadata log rewrite", self.dir.join("log"), bytes).await?;
        self.inner.borrow_mut().len = len;
        Ok(())
    }

    fn check(&self) {
        let inner = self.inner.borrow();
        let (Some(first), Some(last)) = (inner.entries.keys().next(), inner.entries.keys().next_back()) else {
            return;
        };
        assert_eq!(
            (last - first + 1) as usize,
            inner.entries.len(),
            "the metadata log has a hole"
        );
        if let Some(p) = &inner.purged {
            assert!(
                *first > p.index(),
                "entry {first} is at or below the purged {}",
                p.index()
            );
        }
    }
}

impl RaftLogReader<MetaRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self
            .inner
            .borrow()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.borrow().vote)
    }
}

impl RaftLogStorage<MetaRaft> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<MetaRaft>, io::Error> {
        let inner = self.inner.borrow();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(RaftEntry::log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        save_json("metadata vote", self.dir.join("vote"), vote).await?;
        self.inner.borrow_mut().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // A hint: no sync, a torn file reads as unknown.
        let bytes = Arc::new(serde_json::to_vec(&committed).map_err(io::Error::other)?);
        let path = self.dir.join("committed");
        until_room("metadata commit hint", move || {
            durable_file::replace_file(&path, &bytes, Replace::Hint)
        })
        .await?;
        self.inner.borrow_mut().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.borrow().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<MetaRaft>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry>,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        for e in &entries {
            frame(e, &mut bytes)?;
        }
        // The write and its fdatasync run on the blocking pool: on the
        // shard's thread they would stall every connection of shard 0 for
        // the length of a sync. openraft calls `append` one at a time.
        let path = self.dir.join("log");
        let at = self.inner.borrow().len;
        let written = bytes.len() as u64;
        let bytes = Arc::new(bytes);
        let result = until_room("metadata log append", move || {
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)?;
            // A failed attempt may have left part of a frame past the end.
            if f.metadata()?.len() != at {
                f.set_len(at)?;
            }
            f.write_all_at(&bytes, at)?;
            f.sync_data()
        })
        .await;
        if result.is_ok() {
            let mut inner = self.inner.borrow_mut();
            inner.len = at + written;
            for e in entries {
                if let Some(last) = inner.entries.keys().next_back() {
                    assert_eq!(e.index(), last + 1, "metadata log append leaves a hole");
                }
                inner.entries.insert(e.index(), e);
            }
        }
        let report = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.io_completed(report);
        result
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map_or(0, |l| l.index() + 1);
        let cut = {
            let mut inner = self.inner.borrow_mut();
            let cut = inner.entries.split_off(&from);
            !cut.is_empty()
        };
        if cut {
            self.rewrite().await?;
        }
        self.check();
        Ok(())
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        save_json("metadata purge mark", self.dir.join("purged"), &upto).await?;
        {
            let mut inner = self.inner.borrow_mut();
            inner.purged = Some(upto);
            let keep = inner.entries.split_off(&(upto.index() + 1));
            inner.entries = keep;
        }
        self.rewrite().await?;
        self.check();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::storage::RaftLogStorage;
    use openraft::vote::RaftLeaderId;

    use super::*;
    use std::io::Write;

    use crate::quorum::Command;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::LogId::new(LeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry::new_normal(log_id(term, index), Command::each(Vec::new()))
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        compio::runtime::Runtime::new().unwrap().block_on(f)
    }

    /// A store opened in `dir` with entries 1 to `n` of term 1 appended.
    async fn store_with(dir: &Path, n: u64) -> LogStore {
        let mut store = LogStore::open(dir).unwrap();
        store
            .append((1..=n).map(|i| entry(1, i)), IOFlushed::noop())
            .await
            .unwrap();
        store
    }

    /// Writes the first half of `e`'s frame at the end of the log in `dir`,
    /// as an append cut short leaves it.
    fn leave_half_a_frame(dir: &Path, e: &Entry) {
        let mut half = Vec::new();
        frame(e, &mut half).unwrap();
        let mut f = OpenOptions::new().append(true).open(dir.join("log")).unwrap();
        f.write_all(&half[..half.len() / 2]).unwrap();
    }

    async fn entries(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(0..)
            .await
            .unwrap()
            .iter()
            .map(RaftEntry::index)
            .collect()
    }

    #[test]
    fn entries_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let mut store = LogStore::open(dir.path()).unwrap();
            assert!(store.is_pristine());
            store
                .append((1..=5).map(|i| entry(1, i)), IOFlushed::noop())
                .await
                .unwrap();
            // A crash in the middle of the next append leaves half a frame.
            leave_half_a_frame(dir.path(), &entry(1, 6));
            let mut again = LogStore::open(dir.path()).unwrap();
            assert_eq!(entries(&mut again).await, vec![1, 2, 3, 4, 5]);
            // The cut tail is gone from the file too: appends follow on.
            again.append([entry(2, 6)], IOFlushed::noop()).await.unwrap();
            let mut third = LogStore::open(dir.path()).unwrap();
            assert_eq!(entries(&mut third).await, vec![1, 2, 3, 4, 5, 6]);
        });
    }

    #[test]
    fn an_append_that_failed_for_want_of_space_leaves_nothing_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let mut store = store_with(dir.path(), 3).await;
            // An attempt that met a full disk wrote part of its frame.
            leave_half_a_frame(dir.path(), &entry(1, 4));
            // The same store goes on: the next attempt writes over it.
            store.append([entry(1, 4)], IOFlushed::noop()).await.unwrap();
            store.append([entry(1, 5)], IOFlushed::noop()).await.unwrap();
            let mut again = LogStore::open(dir.path()).unwrap();
            assert_eq!(entries(&mut again).await, vec![1, 2, 3, 4, 5]);
        });
    }

    #[test]
    fn a_metadata_write_waits_for_room_and_other_errors_end_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let full = || io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        run(async {
            let tries = Arc::new(AtomicUsize::new(0));
            let t = tries.clone();
            let got = until_room("test", move || match t.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(full()),
                _ => Ok(7),
            })
            .await
            .unwrap();
            assert_eq!((got, tries.load(Ordering::SeqCst)), (7, 3));
            let tries = Arc::new(AtomicUsize::new(0));
            let t = tries.clone();
            let err = until_room("test", move || -> io::Result<()> {
                t.fetch_add(1, Ordering::SeqCst);
                Err(io::Error::other("an I/O error"))
            })
            .await
            .unwrap_err();
            assert_eq!(
                (err.to_string().as_str(), tries.load(Ordering::SeqCst)),
                ("an I/O error", 1)
            );
        });
    }

    #[test]
    fn truncation_and_purge_hold_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let mut store = store_with(dir.path(), 8).await;
            store.truncate_after(Some(log_id(1, 6))).await.unwrap();
            store.purge(log_id(1, 2)).await.unwrap();
            store.save_vote(&Vote::new(3, 1)).await.unwrap();
            let mut again = LogStore::open(dir.path()).unwrap();
            assert_eq!(entries(&mut again).await, vec![3, 4, 5, 6]);
            let state = again.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
            assert_eq!(state.last_log_id, Some(log_id(1, 6)));
            assert_eq!(again.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
            // Everything purged: the last log id is the purged one.
            again.purge(log_id(1, 6)).await.unwrap();
            let state = LogStore::open(dir.path()).unwrap().get_log_state().await.unwrap();
            assert_eq!(state.last_log_id, Some(log_id(1, 6)));
        });
    }

    #[test]
    fn a_corrupt_frame_before_the_end_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        run(store_with(dir.path(), 3));
        let path = dir.path().join("log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = LogStore::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
