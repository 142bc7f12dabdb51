//! Sluice's cluster metadata, below the shards: the records of the
//! metadata log ([`image::MetaRecord`]), the image they build
//! ([`image::Image`], one `apply` for every record), topics and the
//! snapshot every shard reads ([`topics`]), and the controller's state
//! machine ([`controller`]: the requests it takes and the records each
//! one drafts).
//!
//! This crate names no shard, socket, runtime or service: it is the pure
//! state that the controller quorum replicates, so the compiler keeps the
//! state machine apart from the broker that hosts it.

pub mod controller;
pub mod image;
pub mod scram;
pub mod security;
pub mod topics;

/// Kafka's error codes, as the metadata records carry them.
pub use kafka_protocol::ResponseError as ErrorCode;
