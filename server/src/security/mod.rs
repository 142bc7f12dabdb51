//! Authentication and authorization: TLS (rustls, client certificates and their principal),
//! SASL sessions (PLAIN, SCRAM-SHA-256/512) and the principal each
//! connection acts as, and the authorizer over the image's ACLs.
//!
//! Credentials are metadata records (`sluice_metadata::security`), so
//! every broker checks against the same ones; PLAIN's users are settings.

pub mod authorizer;
pub mod sasl;
pub mod tls;

/// SCRAM's exchanges and derivations, with the credentials they check
/// (`sluice_metadata`).
pub use sluice_metadata::scram;

/// The principal of a connection that has not authenticated (a
/// PLAINTEXT or SSL listener without a client certificate), as Kafka
/// names it.
pub const ANONYMOUS: &str = "User:ANONYMOUS";
