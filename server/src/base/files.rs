//! Small JSON state files: read here, replaced through the engine's one
//! durable helper ([`sluice_engine::durable_file::replace_file`]).

use std::io;
use std::path::Path;

use serde::de::DeserializeOwned;

pub use sluice_engine::durable_file::{Replace, replace_file};

/// Reads a small JSON file; `None` when it does not exist, InvalidData
/// naming the file when it does not parse.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
