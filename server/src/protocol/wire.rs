//! Kafka wire primitives for the hand-written codec parts: a bounds-checked
//! reader over a request body and writers for responses. Flexible versions
//! use compact (varint-length) strings, arrays and bytes plus tagged fields.

use bytes::{BufMut, BytesMut};

/// A request body that does not parse. The connection is closed, as Kafka
/// does for requests it cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed request at byte {at}: {what}")]
pub struct ParseError {
    pub at: usize,
    pub what: &'static str,
}

/// Reads primitives from a byte slice, tracking the position.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn err(&self, what: &'static str) -> ParseError {
        ParseError { at: self.pos, what }
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        if self.remaining() < n {
            return Err(self.err(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ParseError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn i8(&mut self) -> Result<i8, ParseError> {
        Ok(i8::from_be_bytes(self.array("int8")?))
    }
    pub fn i16(&mut self) -> Result<i16, ParseError> {
        Ok(i16::from_be_bytes(self.array("int16")?))
    }
    pub fn i32(&mut self) -> Result<i32, ParseError> {
        Ok(i32::from_be_bytes(self.array("int32")?))
    }
    pub fn i64(&mut self) -> Result<i64, ParseError> {
        Ok(i64::from_be_bytes(self.array("int64")?))
    }
    pub fn uuid(&mut self) -> Result<uuid::Uuid, ParseError> {
        Ok(uuid::Uuid::from_bytes(self.array("uuid")?))
    }

    pub fn uvarint(&mut self) -> Result<u32, ParseError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.array::<1>("varint")?[0];
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.err("varint longer than 5 bytes"))
    }

    /// A zigzag varlong, as record fields inside a v2 batch use.
    pub fn varlong(&mut self) -> Result<i64, ParseError> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let b = self.array::<1>("varlong")?[0];
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(self.err("varlong longer than 10 bytes"))
    }

    /// A length prefix: int16/int32 classic or uvarint-minus-one compact.
    /// `None` is null (-1).
    fn length(&mut self, flexible: bool, wide: bool) -> Result<Option<usize>, ParseError> {
        let n: i64 = if flexible {
            i64::from(self.uvarint()?) - 1
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        match n {
            -1 => Ok(None),
            n if n < -1 => Err(self.err("negative length")),
            n => {
                let n = n as usize;
                if n > self.remaining() {
                    return Err(self.err("length beyond the end of the request"));
                }
                Ok(Some(n))
            }
        }
    }

    pub fn nullable_str(&mut self, flexible: bool) -> Result<Option<&'a str>, ParseError> {
        match self.length(flexible, false)? {
            None => Ok(None),
            Some(n) => {
                let s = self.take(n, "string")?;
                std::str::from_utf8(s)
                    .map(Some)
                    .map_err(|_| self.err("string is not UTF-8"))
            }
        }
    }

    pub fn str(&mut self, flexible: bool) -> Result<&'a str, ParseError> {
        self.nullable_str(flexible)?.ok_or(ParseError {
            at: self.pos,
            what: "null where a string is required",
        })
    }

    /// Nullable bytes as a range of the underlying buffer.
    pub fn bytes_range(&mut self, flexible: bool) -> Result<Option<std::ops::Range<usize>>, ParseError> {
        match self.length(flexible, true)? {
            None => Ok(None),
            Some(n) => {
                let start = self.pos;
                self.take(n, "bytes")?;
                Ok(Some(start..start + n))
            }
        }
    }

    /// An array length; each element needs at least one byte, which bounds
    /// what a lying count can make us allocate.
    pub fn array_len(&mut self, flexible: bool) -> Result<usize, ParseError> {
        let n: i64 = if flexible {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        match n {
            -1 => Ok(0),
            n if n < -1 => Err(self.err("negative array length")),
            n if n as usize > self.remaining() => Err(self.err("array longer than the request")),
            n => Ok(n as usize),
        }
    }

    pub fn skip_tagged_fields(&mut self) -> Result<(), ParseError> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let len = self.uvarint()? as usize;
            self.take(len, "tagged field")?;
        }
        Ok(())
    }
}

pub fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

pub fn uvarint_len(mut v: u32) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub fn put_str(buf: &mut BytesMut, s: &str, flexible: bool) {
    if flexible {
        put_uvarint(buf, s.len() as u32 + 1);
    } else {
        buf.put_i16(s.len() as i16);
    }
    buf.put_slice(s.as_bytes());
}

/// The length prefix of a non-null array or bytes field of `n` elements or
/// bytes: uvarint `n + 1` in flexible versions, int32 `n` before them.
pub fn put_len(buf: &mut BytesMut, n: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, n as u32 + 1);
    } else {
        buf.put_i32(n as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        for v in [0u32, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, u32::MAX] {
            let mut b = BytesMut::new();
            put_uvarint(&mut b, v);
            assert_eq!(b.len(), uvarint_len(v));
            assert_eq!(Reader::new(&b).uvarint().unwrap(), v);
        }
        assert!(Reader::new(&[0xff; 6]).uvarint().is_err());
    }

    #[test]
    fn varlongs_decode_kafka_zigzag() {
        let cases: [(&[u8], i64); 6] = [
            (&[0], 0),
            (&[1], -1),
            (&[2], 1),
            (&[0x7f], -64),
            (&[0x80, 0x01], 64),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], i64::MIN),
        ];
        for (bytes, v) in cases {
            assert_eq!(Reader::new(bytes).varlong().unwrap(), v, "{bytes:?}");
        }
        assert!(Reader::new(&[0xff; 11]).varlong().is_err());
        assert!(Reader::new(&[0x80]).varlong().is_err());
    }

    #[test]
    fn lying_lengths_are_errors_not_allocations() {
        assert!(Reader::new(&[0x7f, 0xff, 0xff, 0xff]).array_len(false).is_err());
        assert!(Reader::new(&[0, 10, b'a']).str(false).is_err());
        assert!(Reader::new(&[0xff, 0xfe]).nullable_str(false).is_err());
        assert_eq!(Reader::new(&[0xff, 0xff]).nullable_str(false).unwrap(), None);
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f]).bytes_range(true).is_err());
    }
}
