//! The bottom layer of the broker: what every other layer may use and
//! that uses nothing of the broker's own. The wall clock, small durable
//! files, sockets, per-shard counters, the record codecs; [`crate::util`] (single-threaded
//! queues, flags, permits) and [`crate::error_codes`] belong to this layer
//! too. Nothing here names a shard, a partition, the metadata image or a
//! service (the layer check in `server/tests/layers.rs`).

pub mod clock;
pub mod codecs;
pub mod counters;
pub mod files;
pub mod sockets;
