//! Per-batch compression codecs applied to a batch's records section.
//!
//! Codec ids follow Kafka's numbering so the attribute bits read the same way:
//! 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd. Framing per codec:
//! - gzip: an RFC 1952 gzip member;
//! - snappy: one raw snappy block (no framing format);
//! - lz4: one LZ4 block preceded by the uncompressed length as `u32` little-endian
//!   (`lz4_flex::compress_prepend_size`);
//! - zstd: one zstd frame with the content size in its header.
//!
//! Decompression is bounded: a section that would expand beyond `limit` bytes is an error,
//! not an allocation.

use std::io::{Read, Write};

use super::error::DecodeError;

/// A compression codec for record batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip (deflate) via `flate2`.
    Gzip,
    /// Snappy raw block via `snap`.
    Snappy,
    /// LZ4 block via `lz4_flex`.
    Lz4,
    /// Zstandard via `zstd`.
    Zstd,
}

impl Compression {
    /// Every codec, in id order.
    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    /// The 3-bit codec id stored in batch attributes.
    pub fn id(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Parses a codec id; ids 5..=7 are reserved and rejected.
    pub fn from_id(id: u16) -> Result<Self, DecodeError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(DecodeError::InvalidValue { field: "compression", value: other as i64 }),
        })
    }

    /// The lower-case name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Compresses `input`, appending to `out`. `level` applies to gzip (0–9, default 6)
    /// and zstd (1–22, default 3); `None` picks the codec's default; lz4 and snappy
    /// ignore it.
    pub fn compress(self, input: &[u8], level: Option<i32>, out: &mut Vec<u8>) {
        match self {
            Compression::None => out.extend_from_slice(input),
            Compression::Gzip => {
                let lvl = level.unwrap_or(6).clamp(0, 9) as u32;
                let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(lvl));
                // Writing to a Vec cannot fail.
                enc.write_all(input).expect("gzip into Vec");
                enc.finish().expect("gzip into Vec");
            }
            Compression::Snappy => {
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(input.len()), 0);
                let n = snap::raw::Encoder::new()
                    .compress(input, &mut out[start..])
                    .expect("buffer sized by max_compress_len");
                out.truncate(start + n);
            }
            Compression::Lz4 => out.extend_from_slice(&lz4_flex::compress_prepend_size(input)),
            Compression::Zstd => {
                let lvl = level.unwrap_or(3).clamp(1, 22);
                let c = zstd::bulk::compress(input, lvl).expect("zstd into Vec");
                out.extend_from_slice(&c);
            }
        }
    }

    /// Decompresses `input`, refusing output larger than `limit` bytes.
    pub fn decompress(self, input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        let err = |reason: String| DecodeError::Decompression { codec: self.name(), reason };
        match self {
            Compression::None => {
                if input.len() > limit {
                    return Err(DecodeError::DecompressedTooLarge { limit });
                }
                Ok(input.to_vec())
            }
            Compression::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(input)
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| err(e.to_string()))?;
                if out.len() > limit {
                    return Err(DecodeError::DecompressedTooLarge { limit });
                }
                Ok(out)
            }
            Compression::Snappy => {
                let len = snap::raw::decompress_len(input).map_err(|e| err(e.to_string()))?;
                if len > limit {
                    return Err(DecodeError::DecompressedTooLarge { limit });
                }
                snap::raw::Decoder::new().decompress_vec(input).map_err(|e| err(e.to_string()))
            }
            Compression::Lz4 => {
                if input.len() < 4 {
                    return Err(err("missing length prefix".into()));
                }
                let len = u32::from_le_bytes([input[0], input[1], input[2], input[3]]) as usize;
                if len > limit {
                    return Err(DecodeError::DecompressedTooLarge { limit });
                }
                lz4_flex::decompress_size_prepended(input).map_err(|e| err(e.to_string()))
            }
            Compression::Zstd => {
                let size = match zstd::zstd_safe::get_frame_content_size(input) {
                    Ok(Some(n)) if n > limit as u64 => return Err(DecodeError::DecompressedTooLarge { limit }),
                    Ok(Some(n)) => n as usize,
                    Ok(None) => return Err(err("the zstd frame header has no content size (required)".into())),
                    Err(_) => return Err(err("not a zstd frame".into())),
                };
                let out = zstd::bulk::decompress(input, size).map_err(|e| err(e.to_string()))?;
                if out.len() != size {
                    return Err(err(format!("the frame holds {} bytes, its header says {size}", out.len())));
                }
                Ok(out)
            }
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown compression '{s}' (none, gzip, snappy, lz4, zstd)"))
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_round_trip_and_reserved_ids_are_rejected() {
        for c in Compression::ALL {
            assert_eq!(Compression::from_id(c.id()).unwrap(), c);
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
        }
        for id in 5..8 {
            assert!(Compression::from_id(id).is_err());
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let big = vec![b'a'; 100_000];
        for c in Compression::ALL {
            let mut out = Vec::new();
            c.compress(&big, None, &mut out);
            assert!(
                matches!(c.decompress(&out, 1000), Err(DecodeError::DecompressedTooLarge { .. })),
                "{c} not bounded"
            );
        }
    }

    #[test]
    fn a_zstd_frame_must_state_its_content_size() {
        let data = vec![b'z'; 1000];
        let mut z = zstd::bulk::Compressor::new(3).unwrap();
        z.set_parameter(zstd::stream::raw::CParameter::ContentSizeFlag(false)).unwrap();
        let without = z.compress(&data).unwrap();
        let e = Compression::Zstd.decompress(&without, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("content size"), "{e}");
        let mut with = Vec::new();
        Compression::Zstd.compress(&data, None, &mut with);
        assert_eq!(Compression::Zstd.decompress(&with, 1 << 20).unwrap(), data);
        // Two frames back to back are not one frame.
        let mut two = with.clone();
        two.extend_from_slice(&with);
        assert!(Compression::Zstd.decompress(&two, 1 << 20).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for c in Compression::ALL.into_iter().skip(1) {
            assert!(c.decompress(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3], 1 << 20).is_err(), "{c}");
        }
    }

    proptest! {
        #[test]
        fn every_codec_round_trips(data in proptest::collection::vec(any::<u8>(), 0..4096), lvl in 1i32..9) {
            for c in Compression::ALL {
                let mut out = Vec::new();
                c.compress(&data, Some(lvl), &mut out);
                prop_assert_eq!(c.decompress(&out, data.len()).unwrap(), data.clone());
            }
        }
    }
}
