//! The schema id on a record.
//!
//! Two placements ([`IdPlacement`]):
//!
//! - **Header** (qwire's default): the value is the bare payload (JSON text, Avro datum,
//!   Protobuf message) and a header [`SCHEMA_ID_HEADER`] holds the id as 4 bytes, big-endian.
//! - **Confluent wire format**, which Confluent's deserializers read:
//!
//!   ```text
//!   magic       u8       0
//!   schema id   u32 BE
//!   [Protobuf only] message index: zig-zag varint count, then count zig-zag varint indexes;
//!                   the common [0] (first top-level message) is the single byte 0x00
//!   payload     ...      Avro binary datum (no container header) / UTF-8 JSON / Protobuf
//!   ```

use super::error::ValidationError;

/// Header carrying the schema id (4 bytes, big-endian) when the id travels as a header.
pub const SCHEMA_ID_HEADER: &str = "qwire.schema_id";
/// First byte of Confluent's wire format.
pub const MAGIC: u8 = 0;

/// Where a producer puts the schema id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdPlacement {
    /// In the [`SCHEMA_ID_HEADER`] header; the value is the bare payload.
    #[default]
    Header,
    /// In front of the value, in Confluent's wire format.
    Confluent,
}

impl std::str::FromStr for IdPlacement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "header" => Ok(IdPlacement::Header),
            "confluent" => Ok(IdPlacement::Confluent),
            _ => Err(format!("unknown schema id placement '{s}' (header, confluent)")),
        }
    }
}

/// Bytes that are not a well-formed schema id header or Confluent frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the 5-byte prefix.
    #[error("value of {len} bytes is too short for the Confluent wire format (5 bytes of prefix)")]
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// The first byte is not 0.
    #[error("unknown magic byte {0} (the Confluent wire format starts with 0)")]
    BadMagic(u8),
    /// The message index is cut short, too long, or holds a negative index.
    #[error("bad Protobuf message index: {0}")]
    BadMessageIndex(&'static str),
    /// The id header is not 4 bytes.
    #[error("schema id header of {0} bytes (expected 4)")]
    BadHeader(usize),
}

/// The header value for `id`.
pub fn header_value(id: u32) -> [u8; 4] {
    id.to_be_bytes()
}

/// The id in a header value.
pub fn id_from_header(value: &[u8]) -> Result<u32, WireError> {
    <[u8; 4]>::try_from(value).map(u32::from_be_bytes).map_err(|_| WireError::BadHeader(value.len()))
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    let mut z = ((v << 1) ^ (v >> 31)) as u32;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i32, WireError> {
    let mut z: u32 = 0;
    for i in 0..5 {
        let b = *buf.get(*pos).ok_or(WireError::BadMessageIndex("cut short"))?;
        *pos += 1;
        z |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((z >> 1) as i32) ^ -((z & 1) as i32));
        }
    }
    Err(WireError::BadMessageIndex("varint longer than 5 bytes"))
}

/// Appends a Protobuf message index: `[0]` as the single byte 0, otherwise the count and
/// the indexes as zig-zag varints.
pub fn put_message_index(out: &mut Vec<u8>, index: &[i32]) {
    if index == [0] {
        out.push(0);
        return;
    }
    put_varint(out, index.len() as i32);
    for i in index {
        put_varint(out, *i);
    }
}

/// Reads a message index from the front of `buf`; returns it and the bytes used. A count
/// of 0 means `[0]`.
pub fn get_message_index(buf: &[u8]) -> Result<(Vec<i32>, usize), WireError> {
    let mut pos = 0;
    let count = get_varint(buf, &mut pos)?;
    if count == 0 {
        return Ok((vec![0], pos));
    }
    // Each index takes at least one byte: a count larger than what is left is damage.
    if count < 0 || count as usize > buf.len() - pos {
        return Err(WireError::BadMessageIndex("count exceeds the bytes present"));
    }
    let mut index = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let i = get_varint(buf, &mut pos)?;
        if i < 0 {
            return Err(WireError::BadMessageIndex("negative index"));
        }
        index.push(i);
    }
    Ok((index, pos))
}

/// Frames `payload` in Confluent's wire format; `message_index` is given for Protobuf only.
pub fn encode_confluent(id: u32, message_index: Option<&[i32]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + 4 + payload.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    if let Some(index) = message_index {
        put_message_index(&mut out, index);
    }
    out.extend_from_slice(payload);
    out
}

/// Splits a Confluent-framed value into the schema id and what follows it (for Protobuf,
/// the message index and then the payload: see [`get_message_index`]).
pub fn split_confluent(value: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if value.len() < 5 {
        return Err(WireError::TooShort { len: value.len() });
    }
    if value[0] != MAGIC {
        return Err(WireError::BadMagic(value[0]));
    }
    Ok((u32::from_be_bytes(value[1..5].try_into().expect("4 bytes")), &value[5..]))
}

impl From<WireError> for ValidationError {
    fn from(e: WireError) -> Self {
        ValidationError::new("", "wire_format", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confluent_byte_vectors() {
        // Avro / JSON: magic, id 258 big-endian, payload.
        assert_eq!(encode_confluent(258, None, b"{}"), [0, 0, 0, 1, 2, b'{', b'}']);
        // Protobuf, first message: index [0] is the single byte 0.
        assert_eq!(encode_confluent(1, Some(&[0]), &[8, 1]), [0, 0, 0, 0, 1, 0, 8, 1]);
        // Protobuf, nested message [1, 0]: count 2 → 4, 1 → 2, 0 → 0.
        assert_eq!(encode_confluent(7, Some(&[1, 0]), &[]), [0, 0, 0, 0, 7, 4, 2, 0]);
        // Index 300 → zig-zag 600 → varint 0xd8 0x04.
        let mut v = Vec::new();
        put_message_index(&mut v, &[300]);
        assert_eq!(v, [2, 0xd8, 0x04]);
    }

    #[test]
    fn round_trips() {
        for index in [vec![0], vec![1], vec![0, 0], vec![3, 2, 1], vec![300, i32::MAX]] {
            let framed = encode_confluent(u32::MAX, Some(&index), b"xyz");
            let (id, rest) = split_confluent(&framed).unwrap();
            assert_eq!(id, u32::MAX);
            let (got, used) = get_message_index(rest).unwrap();
            assert_eq!(got, index);
            assert_eq!(&rest[used..], b"xyz");
        }
        assert_eq!(id_from_header(&header_value(77)).unwrap(), 77);
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(split_confluent(&[0, 0, 0]).unwrap_err(), WireError::TooShort { len: 3 });
        assert_eq!(split_confluent(&[1, 0, 0, 0, 1]).unwrap_err(), WireError::BadMagic(1));
        assert!(get_message_index(&[]).is_err());
        assert!(get_message_index(&[4, 2]).is_err()); // count 2, one index
        assert!(get_message_index(&[1]).is_err()); // count -1
        assert!(get_message_index(&[2, 1]).is_err()); // index -1
        assert!(get_message_index(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert_eq!(id_from_header(&[1, 2]).unwrap_err(), WireError::BadHeader(2));
    }
}
