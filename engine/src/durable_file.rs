//! The one way a small file is replaced so that a crash leaves either the
//! old contents or the new ones, never a mix: write a temporary file beside
//! it, sync the temporary file, rename it over the old one, sync the
//! directory (fjall's `rewrite_atomic`). Every small state file of the
//! broker goes through [`replace_file`]: checkpoints, the leader-epoch
//! file, producer-state snapshots, the metadata quorum's vote and
//! snapshots.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How far [`replace_file`] waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// The contents and the rename are durable when it returns: the
    /// temporary file is fdatasynced before the rename and the directory
    /// fsynced after it.
    Durable,
    /// The contents are synced before the rename, the directory is not: the
    /// caller's next directory sync makes the rename durable (a crash
    /// before it leaves the old file, whole).
    DirectoryLater,
    /// Nothing is synced: a hint that may read as its old value, or be
    /// torn, after a power loss (the reader treats a bad one as unknown).
    Hint,
}

/// The temporary file [`replace_file`] writes before renaming it over
/// `path`: `path` with `.tmp` appended to its name.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes`, as `how` says.
pub fn replace_file(path: &Path, bytes: &[u8], how: Replace) -> io::Result<()> {
    let tmp = temporary_path(path);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    if how != Replace::Hint {
        f.sync_data()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if how == Replace::Durable {
        sync_parent(path)?;
    }
    Ok(())
}

/// Fsyncs the directory that holds `path` (a rename or a new file in it
/// becomes durable).
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_replaced_file_holds_the_new_bytes_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for how in [Replace::Durable, Replace::DirectoryLater, Replace::Hint] {
            std::fs::write(&path, b"old").unwrap();
            replace_file(&path, b"new contents", how).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
            assert!(!temporary_path(&path).exists(), "{how:?}");
        }
        assert_eq!(temporary_path(&path), dir.path().join("state.json.tmp"));
    }

    #[test]
    fn a_failed_replace_leaves_the_old_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epochs");
        std::fs::write(&path, b"old").unwrap();
        // A directory where the temporary file goes: the write fails
        // before anything is renamed.
        std::fs::create_dir(temporary_path(&path)).unwrap();
        assert!(replace_file(&path, b"new", Replace::Durable).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }
}
