//! Sluice's storage engine: segmented partition logs of Kafka v2 record
//! batches, appended through io_uring with group commit, recovered on open,
//! trimmed by retention, and read as file slices for zero-copy sends.
//!
//! The engine knows the record-batch framing ([`batch`]) and nothing of
//! Kafka's request APIs. The on-disk format, the durability promise of each
//! flush policy and the recovery table are in `docs/storage.md`.

pub mod batch;
pub mod compact;
pub mod config;
pub mod crash;
mod direct;
pub mod durable_file;
pub mod epochs;
pub mod error;
mod files;
pub mod index;
mod io;
mod log;
mod notify;
mod segment;
pub mod stats;

pub use config::{FlushPolicy, LogConfig};
pub use direct::DirectBuffers;
pub use epochs::{EpochEnd, EpochHistory, LEADER_EPOCH_FILE};
pub use error::{LogError, Result};
pub use files::OpenFiles;
pub use io::{FaultInjector, IoStats};
pub use log::{
    AppendInfo, CLEANED_SUFFIX, CleanRules, CleanStats, Clock, Durability, Env, FileSlice, HIGH_WATERMARK_FILE,
    LOG_START_OFFSET_FILE, Log, Pace, ReadBound, ReadResult, SWAP_SUFFIX, TimestampOffset,
};
pub use notify::{WaitList, Waiter};
