//! The record codecs of compressed batches (gzip, snappy with Kafka's
//! xerial framing, lz4 frames, zstd), through `kafka-protocol`'s
//! compression module: the log cleaner inflates and deflates compacted
//! topics' batches with them, and the produce path inflates a compacted
//! topic's compressed batch to check its keys. The data path never calls
//! them: batches are stored and sent as clients compress them.

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};
use sluice_engine::compact::Codecs;

/// Kafka's codecs by their batch attribute number.
#[derive(Debug, Default, Clone, Copy)]
pub struct KafkaCodecs;

impl Codecs for KafkaCodecs {
    fn inflate(&self, codec: u8, data: &[u8]) -> Option<Vec<u8>> {
        let mut src = Bytes::copy_from_slice(data);
        let take = |b: &mut Bytes| Ok(std::mem::take(b));
        let out = match codec {
            1 => Gzip::decompress(&mut src, take),
            2 => Snappy::decompress(&mut src, take),
            3 => Lz4::decompress(&mut src, take),
            4 => Zstd::decompress(&mut src, take),
            _ => return None,
        };
        out.ok().map(|b| b.to_vec())
    }

    fn deflate(&self, codec: u8, data: &[u8]) -> Option<Vec<u8>> {
        let mut out = BytesMut::new();
        let put = |b: &mut BytesMut| {
            b.extend_from_slice(data);
            Ok(())
        };
        let done = match codec {
            1 => Gzip::compress(&mut out, put),
            2 => Snappy::compress(&mut out, put),
            3 => Lz4::compress(&mut out, put),
            4 => Zstd::compress(&mut out, put),
            _ => return None,
        };
        done.ok().map(|()| out.to_vec())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_codec_round_trips_and_garbage_does_not_inflate() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_be_bytes()).collect();
        for codec in 1..=4 {
            let packed = KafkaCodecs.deflate(codec, &data).unwrap();
            assert!(packed.len() < data.len(), "codec {codec} compresses");
            assert_eq!(KafkaCodecs.inflate(codec, &packed).unwrap(), data, "codec {codec}");
            assert!(
                KafkaCodecs.inflate(codec, b"not compressed at all").is_none(),
                "codec {codec}"
            );
        }
        assert!(KafkaCodecs.deflate(7, &data).is_none());
    }
}
