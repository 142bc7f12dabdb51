//! The engine's one error type. The broker maps it to Kafka error codes in
//! one place; nothing here knows those codes.

use std::{io, path::PathBuf};

use crate::batch::BatchError;

/// Everything a log operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The batch was refused before anything was written.
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    /// A read asked for an offset outside `[log_start_offset, log_end_offset]`.
    #[error("offset {requested} is outside [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        requested: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// An earlier write or fsync failed. The log refuses all further writes
    /// until it is reopened (which runs recovery): retrying could report data
    /// as durable that the kernel already dropped.
    #[error("log is poisoned by an earlier I/O failure: {cause}")]
    Poisoned { cause: String },
    /// The log was closed.
    #[error("log is closed")]
    Closed,
    /// An I/O call failed (on open, read, roll or retention).
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Recovery found damage it must not repair silently: a bad batch in the
    /// middle of a segment that is not the newest.
    #[error("corrupt segment {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// A leader's append carried an epoch below the newest in the log, or a
    /// follower got such a batch from its leader.
    #[error("leader epoch {epoch} is below the log's newest epoch {latest}")]
    StaleEpoch { epoch: i32, latest: i32 },
    /// A follower's batch does not start where the log ends.
    #[error("replicated batch starts at {got}, the log ends at {expected}")]
    NotContiguous { expected: i64, got: i64 },
    /// A configuration value is out of range.
    #[error("invalid log configuration: {0}")]
    Config(String),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
