//! Primitive encoders and a bounds-checked reader shared by frames and batches.
//!
//! All integers are big-endian. Strings are `u16` length + UTF-8. Varints are the
//! zig-zag LEB128 encoding Kafka uses in record batch v2 (`varint` ≤ 5 bytes for `i32`,
//! `varlong` ≤ 10 bytes for `i64`).

use bytes::{BufMut, Bytes};

use super::error::DecodeError;

/// A cursor over a byte slice whose every read is bounds-checked and names its field.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::UnexpectedEof { field, offset: self.pos, need: n, have: self.remaining() });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn i8(&mut self, field: &'static str) -> Result<i8, DecodeError> {
        Ok(self.u8(field)? as i8)
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// A `u16`-length-prefixed UTF-8 string.
    pub(crate) fn str16(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u16(field)? as usize;
        let s = self.take(len, field)?;
        std::str::from_utf8(s).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    fn uvarint(&mut self, field: &'static str, max_bytes: usize) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = self.u8(field)?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow { field, max_bytes })
    }

    /// A zig-zag varint that must fit an `i32`.
    pub(crate) fn varint(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        let raw = self.uvarint(field, 5)?;
        if raw > u64::from(u32::MAX) {
            return Err(DecodeError::VarintOverflow { field, max_bytes: 5 });
        }
        let raw = raw as u32;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    /// A zig-zag varlong (`i64`).
    pub(crate) fn varlong(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let raw = self.uvarint(field, 10)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// A varint length followed by that many bytes; length -1 means null.
    pub(crate) fn var_bytes(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, DecodeError> {
        let len = self.varint(field)?;
        match len {
            -1 => Ok(None),
            l if l < -1 => Err(DecodeError::InvalidValue { field, value: l as i64 }),
            l => self.take(l as usize, field).map(Some),
        }
    }

    /// Fails if any byte is left.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { what, extra }),
        }
    }
}

/// Writes a `u16`-length-prefixed string. Callers guarantee `s.len() <= u16::MAX`
/// (enforced where strings enter: topic names, client ids, messages are truncated).
pub(crate) fn put_str16(buf: &mut impl BufMut, s: &str) {
    let s = truncate_utf8(s, u16::MAX as usize);
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

/// Encoded length of [`put_str16`].
pub(crate) fn str16_len(s: &str) -> usize {
    2 + truncate_utf8(s, u16::MAX as usize).len()
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_uvarint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn uvarint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Writes a zig-zag varint.
pub(crate) fn put_varint(buf: &mut impl BufMut, v: i32) {
    put_uvarint(buf, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

/// Bytes [`put_varint`] writes.
pub(crate) fn varint_len(v: i32) -> usize {
    uvarint_len(u64::from(((v << 1) ^ (v >> 31)) as u32))
}

/// Writes a zig-zag varlong.
pub(crate) fn put_varlong(buf: &mut impl BufMut, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Bytes [`put_varlong`] writes.
pub(crate) fn varlong_len(v: i64) -> usize {
    uvarint_len(((v << 1) ^ (v >> 63)) as u64)
}

/// Writes optional bytes with a varint length (-1 for `None`).
pub(crate) fn put_var_bytes(buf: &mut impl BufMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.put_slice(b);
        }
    }
}

/// Bytes [`put_var_bytes`] writes.
pub(crate) fn var_bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

/// Slices `owner` at the position of `part`, which must be a sub-slice of it; gives a
/// zero-copy `Bytes` for a field decoded from a `&[u8]` view of `owner`.
pub(crate) fn slice_of(owner: &Bytes, part: &[u8]) -> Bytes {
    owner.slice_ref(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_vectors_match_kafka() {
        // Values and encodings from Kafka's ByteUtilsTest.
        let cases: [(i32, &[u8]); 6] =
            [(0, &[0x00]), (-1, &[0x01]), (1, &[0x02]), (63, &[0x7e]), (-64, &[0x7f]), (64, &[0x80, 0x01])];
        for (v, want) in cases {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b, want, "encoding {v}");
            assert_eq!(varint_len(v), want.len());
            assert_eq!(Reader::new(want).varint("v").unwrap(), v);
        }
        let mut b = Vec::new();
        put_varint(&mut b, i32::MIN);
        assert_eq!(b, [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let bytes = [0x80u8; 6];
        assert!(matches!(Reader::new(&bytes).varint("v"), Err(DecodeError::VarintOverflow { .. })));
        // Five bytes but more than 32 bits of payload.
        let too_big = [0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(Reader::new(&too_big).varint("v").is_err());
    }

    #[test]
    fn truncated_reads_report_field_and_sizes() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32("len"), Err(DecodeError::UnexpectedEof { field: "len", offset: 0, need: 4, have: 3 }));
    }

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<i32>()) {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            prop_assert_eq!(b.len(), varint_len(v));
            let mut r = Reader::new(&b);
            prop_assert_eq!(r.varint("v").unwrap(), v);
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn varlong_round_trip(v in any::<i64>()) {
            let mut b = Vec::new();
            put_varlong(&mut b, v);
            prop_assert_eq!(b.len(), varlong_len(v));
            prop_assert_eq!(Reader::new(&b).varlong("v").unwrap(), v);
        }

        #[test]
        fn str16_round_trip(s in ".{0,64}") {
            let mut b = Vec::new();
            put_str16(&mut b, &s);
            prop_assert_eq!(b.len(), str16_len(&s));
            prop_assert_eq!(Reader::new(&b).str16("s").unwrap(), s);
        }
    }
}
