//! `sluice-bench`: OpenMessaging-style workloads against any Kafka-protocol
//! broker, HDR latency histograms without coordinated omission, JSON
//! reports, and a regression gate for CI.

pub mod admin;
pub mod floor;
pub mod latency;
pub mod report;
pub mod run;
pub mod spawn;
pub mod wire;
pub mod workload;
