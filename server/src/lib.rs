//! Sluice, a Kafka-protocol broker built thread-per-core on io_uring.
//!
//! The modules by layer, bottom to top (`docs/architecture.md`, "Layers";
//! `tests/layers.rs` checks that no module names a layer above its own):
//!
//! - base: [`base`] (wall clock, small durable files, sockets, per-shard
//!   counters), [`util`] (single-threaded queues, flags, permits),
//!   [`error_codes`], [`disk`] (the free-space reserve).
//! - [`config`]: the broker's settings.
//! - metadata: [`meta`] (topics with the broker's config applied; the
//!   image and records are the `sluice-metadata` crate, re-exported as
//!   [`image`]), [`security`] (SASL sessions and SCRAM).
//! - [`quorum`]: the controller quorum (openraft), its log and state
//!   machine; [`protocol`]: the hand-written codec parts (request header,
//!   Produce request, Fetch response).
//! - replica: [`partition`] (log, producer table, append rules, leader or
//!   follower state, high watermark and ISR), [`producer_state`]
//!   (idempotent-producer deduplication).
//! - [`shard`]: the shard core: one pinned thread per core; its partition
//!   table, the placement table and cross-shard jobs; generic over the
//!   services it hosts.
//! - services: [`controller`] (the metadata's one writer: serialised
//!   changes, publication), [`groups`] (the consumer-group coordinator
//!   and committed offsets), [`replication`] (followers fetching from
//!   their leaders), each handed the shard through its host trait.
//! - [`node`]: the services a node runs on each shard (`node::Services`,
//!   `node::Shard`) and the shard's periodic work, one file per task
//!   (`node::tasks`).
//! - api: [`handlers`] (one module per Kafka API family and the table of
//!   supported APIs), [`net`] (connections, framing, back-pressure,
//!   ordered responses, zero-copy sends), [`metrics`] and [`ops`] (the
//!   operators' HTTP listener).
//! - process: [`broker`] (start-up and shut-down of the shards), [`cli`].
//!
//! `docs/architecture.md` walks through a produce and a fetch.

pub mod base;
pub mod broker;
pub mod cli;
pub mod config;
pub mod controller;
pub mod disk;
pub mod error_codes;
pub mod groups;
pub mod handlers;
pub mod meta;
pub mod metrics;
pub mod net;
pub mod node;
pub mod ops;
pub mod partition;
pub mod producer_state;
pub mod protocol;
pub mod quorum;
pub mod replication;
pub mod security;
pub mod shard;
pub mod txn;
pub mod util;

pub use broker::{Broker, StartError, Stopped};
pub use config::BrokerConfig;
/// The metadata image and its records live in their own crate, below the
/// shards; `crate::image` names it here.
pub use sluice_metadata::image;
