//! The hand-written parts of the Kafka codec, where copies matter: the
//! request header read for routing, the Produce request (whose record
//! batches are split off the frame without a copy and rewritten in place)
//! and the Fetch response (memory parts and file parts). Everything else
//! uses the `kafka-protocol` crate.

pub mod fetch;
pub mod guard;
pub mod link;
pub mod peer;
pub mod produce;
pub mod wire;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Encodable;
use sluice_engine::FileSlice;

use self::wire::{ParseError, Reader};

/// The fixed part of every request header, read before anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// Bytes of the header; the body follows.
    pub len: usize,
    /// Where the client id sits in the header, when it is not null.
    pub client_id: Option<std::ops::Range<usize>>,
}

/// Reads the request header. `flexible_header` says whether this API
/// version uses header v2 (tagged fields after the client id).
pub fn read_header(frame: &[u8], flexible_header: bool) -> Result<RequestHeader, ParseError> {
    let mut r = Reader::new(frame);
    let api_key = r.i16()?;
    let api_version = r.i16()?;
    let correlation_id = r.i32()?;
    // The client id is a classic nullable string even in header v2; only
    // its place is kept (group members report it).
    let start = r.pos() + 2;
    let client_id = r.nullable_str(false)?.map(|s| start..start + s.len());
    if flexible_header {
        r.skip_tagged_fields()?;
    }
    Ok(RequestHeader {
        api_key,
        api_version,
        correlation_id,
        len: r.pos(),
        client_id,
    })
}

/// Just the api key, version and correlation id: enough to answer or refuse.
pub fn peek(frame: &[u8]) -> Option<(i16, i16, i32)> {
    let mut r = Reader::new(frame);
    Some((r.i16().ok()?, r.i16().ok()?, r.i32().ok()?))
}

/// One piece of a response on the wire.
#[derive(Debug, Clone)]
pub enum Part {
    Mem(Bytes),
    /// Bytes of a segment file, sent with splice (or copied when zero-copy
    /// is off).
    File(FileSlice),
}

impl Part {
    pub fn len(&self) -> usize {
        match self {
            Part::Mem(b) => b.len(),
            Part::File(f) => f.len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A complete response frame (size prefix included) as parts.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub parts: Vec<Part>,
}

impl Response {
    pub fn len(&self) -> usize {
        self.parts.iter().map(Part::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Copies every part into one buffer: for tests and the copying path.
    pub fn to_bytes(&self) -> std::io::Result<Bytes> {
        let mut out = BytesMut::with_capacity(self.len());
        for p in &self.parts {
            match p {
                Part::Mem(b) => out.put_slice(b),
                Part::File(f) => out.put_slice(&f.to_bytes()?),
            }
        }
        Ok(out.freeze())
    }
}

/// Whether the response header for this API version carries tagged fields.
pub fn response_header_flexible(api_key: ApiKey, version: i16) -> bool {
    api_key.response_header_version(version) >= 1
}

pub fn request_header_flexible(api_key: ApiKey, version: i16) -> bool {
    api_key.request_header_version(version) >= 2
}

/// Writes the size prefix and the response header into `buf`, which must
/// be empty; the caller appends `body_len` bytes of body after it.
pub fn put_response_header(buf: &mut BytesMut, correlation_id: i32, flexible: bool, body_len: usize) {
    let header_len = 4 + usize::from(flexible);
    buf.put_i32((header_len + body_len) as i32);
    buf.put_i32(correlation_id);
    if flexible {
        buf.put_u8(0);
    }
}

/// Encodes a crate message as a complete response frame.
pub fn encode<M: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    message: &M,
) -> Result<Response, String> {
    let flexible = response_header_flexible(api_key, version);
    let body_len = message.compute_size(version).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(9 + body_len);
    put_response_header(&mut buf, correlation_id, flexible, body_len);
    message.encode(&mut buf, version).map_err(|e| e.to_string())?;
    Ok(Response {
        parts: vec![Part::Mem(buf.freeze())],
    })
}
