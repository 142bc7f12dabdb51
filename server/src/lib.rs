//! Sluice, a Kafka-protocol broker built thread-per-core on io_uring.
//!
//! - [`broker`]: start-up and shut-down of the shards.
//! - [`shard`]: one pinned thread per core; its partition table, the
//!   placement table and cross-shard jobs.
//! - [`partition`]: one partition replica (log, producer table, append
//!   rules, leader or follower state, high watermark and ISR).
//! - [`replication`]: followers fetching from their leaders.
//! - [`net`]: connections, framing, back-pressure, ordered responses and
//!   zero-copy sends.
//! - [`handlers`]: one module per Kafka API family and the table of
//!   supported APIs.
//! - [`protocol`]: the hand-written codec parts (request header, Produce
//!   request, Fetch response).
//! - [`groups`]: the consumer-group coordinator and committed offsets.
//! - [`controller`]: the metadata's one writer (shard 0): serialised
//!   changes, undo, publication.
//! - [`meta`]: topics and their persisted metadata; [`producer_state`]:
//!   idempotent-producer deduplication.
//!
//! `docs/architecture.md` walks through a produce and a fetch.

pub mod broker;
pub mod cli;
pub mod config;
pub mod controller;
pub mod disk;
pub mod error_codes;
pub mod groups;
pub mod handlers;
pub mod image;
pub mod meta;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod partition;
pub mod producer_state;
pub mod protocol;
pub mod quorum;
pub mod replication;
pub mod shard;
pub mod util;

pub use broker::{Broker, StartError, Stopped};
pub use config::BrokerConfig;
