//! The record batch: the unit a producer seals, the broker stores as received and a
//! fetch returns. Modelled on Kafka's record batch v2.
//!
//! ```text
//! offset size field
//!  0     8   base_offset        i64  assigned by the broker; producers write 0
//!  8     4   batch_length       u32  bytes after this field
//! 12     1   magic              u8   = 1
//! 13     4   crc                u32  CRC-32C of bytes 17..end
//! 17     2   attributes         u16  bits 0-2 codec; other bits must be 0
//! 19     4   last_offset_delta  u32  record_count - 1
//! 23     8   base_timestamp     i64  ms since the Unix epoch
//! 31     8   max_timestamp      i64
//! 39     8   producer_id        i64  -1 when not idempotent
//! 47     2   producer_epoch     i16  -1 when not idempotent
//! 49     4   base_sequence      i32  -1 when not idempotent
//! 53     4   record_count       u32  >= 1
//! 57     ..  records            (compressed as one block when codec != none)
//! ```
//!
//! The CRC does not cover `base_offset`, `batch_length` or `magic`, so the broker stamps
//! the offset without recomputing it.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{put_var_bytes, put_varint, put_varlong, slice_of, var_bytes_len, varint_len, varlong_len, Reader};
use super::compression::Compression;
use super::crc_shift::shift_past_zeros;
use super::error::DecodeError;
use super::record::{Header, Record};

/// Current batch format version.
pub const BATCH_MAGIC: u8 = 1;
/// Bytes in a batch header (everything before the records section).
pub const BATCH_HEADER_LEN: usize = 57;
/// Offset of the first CRC-covered byte.
const CRC_START: usize = 17;
/// `producer_id`, `producer_epoch` and `base_sequence` value for a non-idempotent batch.
pub const NO_PRODUCER_ID: i64 = -1;
/// See [`NO_PRODUCER_ID`].
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// See [`NO_PRODUCER_ID`].
pub const NO_SEQUENCE: i32 = -1;

/// Idempotence fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id from `InitProducerId`, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// Producer epoch, or [`NO_PRODUCER_EPOCH`].
    pub producer_epoch: i16,
    /// Sequence number of the first record, or [`NO_SEQUENCE`].
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// The stamp of a batch from a producer without idempotence.
    pub const NONE: ProducerStamp =
        ProducerStamp { producer_id: NO_PRODUCER_ID, producer_epoch: NO_PRODUCER_EPOCH, base_sequence: NO_SEQUENCE };
}

/// The fixed header of a record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (0 until the broker assigns it).
    pub base_offset: i64,
    /// Bytes after the `batch_length` field.
    pub batch_length: u32,
    /// Stored CRC-32C.
    pub crc: u32,
    /// Codec of the records section.
    pub compression: Compression,
    /// `record_count - 1`.
    pub last_offset_delta: u32,
    /// Timestamp of the first record (ms).
    pub base_timestamp: i64,
    /// Largest record timestamp (ms).
    pub max_timestamp: i64,
    /// Producer id, epoch and base sequence.
    pub producer: ProducerStamp,
    /// Number of records.
    pub record_count: u32,
}

impl BatchHeader {
    /// Reads and validates a header from the start of `buf`. `Ok(None)` when fewer than
    /// [`BATCH_HEADER_LEN`] bytes are available. Does not check the CRC.
    pub fn parse(buf: &[u8]) -> Result<Option<BatchHeader>, DecodeError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Ok(None);
        }
        let mut r = Reader::new(buf);
        let base_offset = r.i64("base_offset")?;
        let batch_length = r.u32("batch_length")?;
        let magic = r.u8("magic")?;
        if magic != BATCH_MAGIC {
            return Err(DecodeError::UnsupportedMagic { magic });
        }
        if (batch_length as usize) < BATCH_HEADER_LEN - 12 {
            return Err(DecodeError::InvalidValue { field: "batch_length", value: batch_length as i64 });
        }
        let crc = r.u32("crc")?;
        let attributes = r.u16("attributes")?;
        if attributes & !0x7 != 0 {
            return Err(DecodeError::InvalidValue { field: "attributes", value: attributes as i64 });
        }
        let compression = Compression::from_id(attributes & 0x7)?;
        let last_offset_delta = r.u32("last_offset_delta")?;
        let base_timestamp = r.i64("base_timestamp")?;
        let max_timestamp = r.i64("max_timestamp")?;
        let producer = ProducerStamp {
            producer_id: r.i64("producer_id")?,
            producer_epoch: r.i16("producer_epoch")?,
            base_sequence: r.i32("base_sequence")?,
        };
        let record_count = r.u32("record_count")?;
        // Sequences and offset deltas are i32 on the wire of each record: a batch holds
        // at most i32::MAX records.
        if record_count == 0 || record_count > i32::MAX as u32 || last_offset_delta != record_count - 1 {
            return Err(DecodeError::InvalidValue { field: "record_count", value: record_count as i64 });
        }
        Ok(Some(BatchHeader {
            base_offset,
            batch_length,
            crc,
            compression,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer,
            record_count,
        }))
    }

    /// Total bytes of the batch including `base_offset` and `batch_length`.
    pub fn total_len(&self) -> usize {
        12 + self.batch_length as usize
    }

    /// Offset of the last record once `base_offset` is assigned.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    /// Sequence of the last record (wraps at `i32::MAX` like Kafka).
    pub fn last_sequence(&self) -> i32 {
        if self.producer.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        increment_sequence(self.producer.base_sequence, self.last_offset_delta as i32)
    }

    /// Whether the batch carries idempotence fields.
    pub fn is_idempotent(&self) -> bool {
        self.producer.producer_id >= 0
    }
}

/// `seq + n` wrapping from `i32::MAX` to 0, as Kafka sequences do. Sequences are
/// non-negative; any input is handled without overflow.
pub fn increment_sequence(seq: i32, n: i32) -> i32 {
    (i64::from(seq) + i64::from(n)).rem_euclid(i64::from(i32::MAX) + 1) as i32
}

/// Checks that `buf` starts with one whole, CRC-valid batch. `Ok(None)` when more bytes
/// are needed; otherwise the header and the batch's total length.
pub fn check_batch(buf: &[u8]) -> Result<Option<BatchHeader>, DecodeError> {
    let Some(h) = BatchHeader::parse(buf)? else { return Ok(None) };
    if buf.len() < h.total_len() {
        return Ok(None);
    }
    let computed = crc32c::crc32c(&buf[CRC_START..h.total_len()]);
    if computed != h.crc {
        return Err(DecodeError::CrcMismatch { stored: h.crc, computed });
    }
    Ok(Some(h))
}

/// A whole record batch held as bytes: what travels in a produce frame, what the log
/// stores and what a fetch returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Validates `bytes` as exactly one batch (structure and CRC).
    pub fn from_bytes(bytes: Bytes) -> Result<RecordBatch, DecodeError> {
        let header = check_batch(&bytes)?.ok_or(DecodeError::UnexpectedEof {
            field: "record_batch",
            offset: 0,
            need: BatchHeader::parse(&bytes).ok().flatten().map_or(BATCH_HEADER_LEN, |h| h.total_len()),
            have: bytes.len(),
        })?;
        if header.total_len() != bytes.len() {
            return Err(DecodeError::TrailingBytes { what: "record batch", extra: bytes.len() - header.total_len() });
        }
        Ok(RecordBatch { header, bytes })
    }

    /// Splits a buffer of back-to-back batches (a fetch response, a log segment).
    pub fn split_all(mut buf: Bytes) -> Result<Vec<RecordBatch>, DecodeError> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let Some(h) = check_batch(&buf)? else {
                return Err(DecodeError::UnexpectedEof {
                    field: "record_batch",
                    offset: 0,
                    need: BATCH_HEADER_LEN,
                    have: buf.len(),
                });
            };
            let bytes = buf.split_to(h.total_len());
            out.push(RecordBatch { header: h, bytes });
        }
        Ok(out)
    }

    /// The batch header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch as bytes, `base_offset` included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Checks the records section without building records: it decompresses (bounded by
    /// `limit`) and checks every record exactly as [`RecordBatch::records`] would decode
    /// it, so a batch whose header claims more (or fewer) records than it holds, or whose
    /// records would not decode, is refused. The broker runs
    /// this before appending, since it stores batches without decoding them.
    pub fn validate_records(&self, limit: usize) -> Result<(), DecodeError> {
        let section = self.section(limit)?;
        let mut r = Reader::new(&section);
        let mut n: u32 = 0;
        while r.remaining() > 0 && n <= self.header.record_count {
            let (mut rr, _) = record_head(&mut r, n)?;
            // The rest of the record, checked as `records()` would decode it, without
            // building anything.
            rr.var_bytes("key")?;
            rr.var_bytes("value")?;
            let n_headers = rr.varint("header_count")?;
            if n_headers < 0 || n_headers as usize > rr.remaining() {
                return Err(DecodeError::InvalidValue { field: "header_count", value: n_headers as i64 });
            }
            for _ in 0..n_headers {
                let k = rr
                    .var_bytes("header_key")?
                    .ok_or(DecodeError::InvalidValue { field: "header_key_length", value: -1 })?;
                std::str::from_utf8(k).map_err(|_| DecodeError::InvalidUtf8 { field: "header_key" })?;
                rr.var_bytes("header_value")?;
            }
            rr.finish("record")?;
            n += 1;
        }
        if n != self.header.record_count || r.remaining() > 0 {
            return Err(DecodeError::RecordCountMismatch { claimed: self.header.record_count, found: n });
        }
        Ok(())
    }

    /// The records section, decompressed (bounded by `limit` bytes) when the batch is
    /// compressed; a zero-copy slice otherwise.
    fn section(&self, limit: usize) -> Result<Bytes, DecodeError> {
        let raw = self.bytes.slice(BATCH_HEADER_LEN..);
        match self.header.compression {
            Compression::None => Ok(raw),
            c => Ok(Bytes::from(c.decompress(&raw, limit)?)),
        }
    }

    /// Decompresses (bounded by `limit` bytes) and decodes every record, giving each its
    /// absolute offset and timestamp.
    pub fn records(&self, limit: usize) -> Result<Vec<StoredRecord>, DecodeError> {
        let section = self.section(limit)?;
        let mut r = Reader::new(&section);
        let mut out = Vec::with_capacity(self.header.record_count.min(1 << 16) as usize);
        while r.remaining() > 0 {
            let (mut rr, ts_delta) = record_head(&mut r, out.len() as u32)?;
            let offset = self
                .header
                .base_offset
                .checked_add(out.len() as i64)
                .ok_or(DecodeError::InvalidValue { field: "base_offset", value: self.header.base_offset })?;
            let key = rr.var_bytes("key")?.map(|k| slice_of(&section, k));
            let value = rr.var_bytes("value")?.map(|v| slice_of(&section, v));
            let n_headers = rr.varint("header_count")?;
            if n_headers < 0 || n_headers as usize > rr.remaining() {
                return Err(DecodeError::InvalidValue { field: "header_count", value: n_headers as i64 });
            }
            let mut headers = Vec::with_capacity(n_headers as usize);
            for _ in 0..n_headers {
                let k = rr
                    .var_bytes("header_key")?
                    .ok_or(DecodeError::InvalidValue { field: "header_key_length", value: -1 })?;
                let key =
                    std::str::from_utf8(k).map_err(|_| DecodeError::InvalidUtf8 { field: "header_key" })?.to_owned();
                let value = rr.var_bytes("header_value")?.map(|v| slice_of(&section, v));
                headers.push(Header { key, value });
            }
            rr.finish("record")?;
            out.push(StoredRecord {
                offset,
                timestamp: self.header.base_timestamp.wrapping_add(ts_delta),
                key,
                value,
                headers,
            });
        }
        if out.len() as u64 != u64::from(self.header.record_count) {
            return Err(DecodeError::RecordCountMismatch {
                claimed: self.header.record_count,
                found: out.len() as u32,
            });
        }
        Ok(out)
    }
}

/// Reads one record's length prefix and leading fields (attributes, timestamp delta,
/// offset delta) and checks that its offset delta is `index`: records carry consecutive
/// deltas 0, 1, 2... Returns a reader over the rest of the record and the timestamp delta.
fn record_head<'a>(r: &mut Reader<'a>, index: u32) -> Result<(Reader<'a>, i64), DecodeError> {
    let len = r.varint("record_length")?;
    if len < 0 {
        return Err(DecodeError::InvalidValue { field: "record_length", value: len as i64 });
    }
    let mut rr = Reader::new(r.take(len as usize, "record")?);
    rr.i8("record_attributes")?;
    let ts_delta = rr.varlong("timestamp_delta")?;
    let delta = rr.varint("offset_delta")?;
    if i64::from(delta) != i64::from(index) {
        return Err(DecodeError::InvalidValue { field: "offset_delta", value: delta as i64 });
    }
    Ok((rr, ts_delta))
}

/// A record read back from a batch, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Absolute offset in the partition.
    pub offset: i64,
    /// Record timestamp (ms since the Unix epoch).
    pub timestamp: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value, if any (`None` is a tombstone).
    pub value: Option<Bytes>,
    /// Headers in the order they were sent.
    pub headers: Vec<Header>,
}

/// Builds one batch: records are encoded into the records section as they are
/// appended, behind room left for the header; [`BatchBuilder::seal`] writes the header in
/// place (no copy) or, when compression pays off, compresses the section.
#[derive(Debug)]
pub struct BatchBuilder {
    /// Header space followed by the uncompressed records section.
    buf: BytesMut,
    base_timestamp: i64,
    max_timestamp: i64,
    count: u32,
}

impl BatchBuilder {
    /// A builder whose first record's timestamp will be the base timestamp.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A builder with `cap` bytes reserved for the records section.
    pub fn with_capacity(cap: usize) -> Self {
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_LEN + cap);
        buf.put_bytes(0, BATCH_HEADER_LEN);
        BatchBuilder { buf, base_timestamp: 0, max_timestamp: 0, count: 0 }
    }

    /// A builder writing into `buf` (cleared first), e.g. the buffer of an earlier batch
    /// that is no longer needed: no allocation while the batch fits its capacity.
    pub fn with_buffer(mut buf: BytesMut) -> Self {
        buf.clear();
        buf.put_bytes(0, BATCH_HEADER_LEN);
        BatchBuilder { buf, base_timestamp: 0, max_timestamp: 0, count: 0 }
    }

    /// Number of records appended.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if sealed uncompressed now.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes a record would add to the batch if appended next (its encoded size).
    pub fn record_size(&self, record: &Record) -> usize {
        let ts_delta = if self.count == 0 { 0 } else { record.timestamp.wrapping_sub(self.base_timestamp) };
        let body = record_body_len(record, ts_delta, self.count as i32);
        varint_len(body as i32) + body
    }

    /// Encodes a record at the end of the batch.
    pub fn push(&mut self, record: &Record) {
        let (ts_delta, body) = self.measure(record);
        self.append(record, ts_delta, body);
    }

    /// Encodes a record at the end of the batch if the batch stays within `limit` bytes
    /// with it (or is empty: a batch holds at least one record, however large). Returns
    /// whether it was appended. Same result as [`record_size`](Self::record_size) then
    /// [`push`](Self::push), with the record measured once.
    pub fn push_within(&mut self, record: &Record, limit: usize) -> bool {
        let (ts_delta, body) = self.measure(record);
        if self.count > 0 && self.buf.len() + varint_len(body as i32) + body > limit {
            return false;
        }
        self.append(record, ts_delta, body);
        true
    }

    /// The record's timestamp delta and body length if appended next.
    fn measure(&self, record: &Record) -> (i64, usize) {
        let ts_delta = if self.count == 0 { 0 } else { record.timestamp.wrapping_sub(self.base_timestamp) };
        (ts_delta, record_body_len(record, ts_delta, self.count as i32))
    }

    fn append(&mut self, record: &Record, ts_delta: i64, body: usize) {
        if self.count == 0 {
            self.base_timestamp = record.timestamp;
            self.max_timestamp = record.timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        let offset_delta = self.count as i32;
        let b = &mut self.buf;
        b.reserve(varint_len(body as i32) + body);
        put_varint(b, body as i32);
        b.put_i8(0);
        put_varlong(b, ts_delta);
        put_varint(b, offset_delta);
        put_var_bytes(b, record.key.as_deref());
        put_var_bytes(b, record.value.as_deref());
        put_varint(b, record.headers.len() as i32);
        for h in &record.headers {
            put_var_bytes(b, Some(h.key.as_bytes()));
            put_var_bytes(b, h.value.as_deref());
        }
        self.count += 1;
    }

    /// Finishes the batch. The records section is compressed with `compression` unless
    /// that does not make it smaller, in which case the batch goes uncompressed (and the
    /// bytes are not copied again: the header is written in the space kept for it).
    /// Panics if the builder is empty (a batch holds at least one record).
    pub fn seal(self, compression: Compression, level: Option<i32>, stamp: ProducerStamp) -> Bytes {
        assert!(self.count > 0, "sealing an empty batch");
        let (count, base, max) = (self.count, self.base_timestamp, self.max_timestamp);
        if compression != Compression::None {
            let mut out = Vec::with_capacity(self.buf.len() / 2 + BATCH_HEADER_LEN);
            out.resize(BATCH_HEADER_LEN, 0);
            compression.compress(&self.buf[BATCH_HEADER_LEN..], level, &mut out);
            if out.len() < self.buf.len() {
                write_header(&mut out, compression, count, base, max, stamp);
                // A sealed batch lives until it is acknowledged: give back what the
                // compressor's buffer over-allocated.
                out.shrink_to_fit();
                return Bytes::from(out);
            }
        }
        let mut buf = self.buf;
        write_header(&mut buf, Compression::None, count, base, max, stamp);
        if buf.capacity() > buf.len() + buf.len() / 4 {
            // The buffer grew past what the batch needs: keep an exact copy instead.
            return Bytes::copy_from_slice(&buf);
        }
        buf.freeze()
    }
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Fills the header of `batch` (whose records section follows the header space) and its
/// CRC.
fn write_header(batch: &mut [u8], codec: Compression, count: u32, base_ts: i64, max_ts: i64, stamp: ProducerStamp) {
    let len = batch.len();
    let mut h = &mut batch[..BATCH_HEADER_LEN];
    h.put_i64(0);
    h.put_u32((len - 12) as u32);
    h.put_u8(BATCH_MAGIC);
    h.put_u32(0); // crc, filled below
    h.put_u16(codec.id());
    h.put_u32(count - 1);
    h.put_i64(base_ts);
    h.put_i64(max_ts);
    h.put_i64(stamp.producer_id);
    h.put_i16(stamp.producer_epoch);
    h.put_i32(stamp.base_sequence);
    h.put_u32(count);
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[13..17].copy_from_slice(&crc.to_be_bytes());
}

fn record_body_len(record: &Record, ts_delta: i64, offset_delta: i32) -> usize {
    1 + varlong_len(ts_delta)
        + varint_len(offset_delta)
        + var_bytes_len(record.key.as_deref())
        + var_bytes_len(record.value.as_deref())
        + varint_len(record.headers.len() as i32)
        + record
            .headers
            .iter()
            .map(|h| var_bytes_len(Some(h.key.as_bytes())) + var_bytes_len(h.value.as_deref()))
            .sum::<usize>()
}

/// Offsets of the producer fields (`producer_id`, `producer_epoch`, `base_sequence`).
const STAMP_FIELDS: std::ops::Range<usize> = 39..53;

/// Rewrites the producer fields of a sealed batch and recomputes its CRC: used when a
/// producer bumps its epoch and must resend batches with new sequence numbers. Copies the
/// batch; see [`restamp_owned`] for the in-place form.
pub fn restamp(batch: &[u8], stamp: ProducerStamp) -> Bytes {
    let mut out = BytesMut::from(batch);
    restamp_mut(&mut out, stamp);
    out.freeze()
}

/// [`restamp`] without a copy when `batch` is the only handle to its bytes (a sealed
/// batch at its first send): the fields are rewritten in place and the CRC updated from
/// the 14 changed bytes alone, without reading the records. A shared batch (one still
/// being written, say) is copied as [`restamp`] does.
pub fn restamp_owned(batch: Bytes, stamp: ProducerStamp) -> Bytes {
    match batch.try_into_mut() {
        Ok(mut b) => {
            restamp_mut(&mut b, stamp);
            b.freeze()
        }
        Err(shared) => restamp(&shared, stamp),
    }
}

/// Writes the stamp into a sealed batch and updates its CRC incrementally.
///
/// CRC-32C is affine over GF(2): for messages of one length, `crc(a) ^ crc(b) ^ crc(c) =
/// crc(a ^ b ^ c)`. With `a` the old CRC-covered bytes, `b` the new ones and `c` all
/// zeros, `a ^ b` is zero except the stamp fields, so `crc(new) = crc(old) ^ crc(a ^ b) ^
/// crc(0…)`. Both of the last two are a 36-byte prefix followed by the same run of zeros;
/// shifting by that run ([`shift_past_zeros`], what `crc32c_combine` with an empty second
/// part computes, in O(log n) multiplications) is linear, so their XOR is the shift of the
/// XOR of the two prefixes' CRCs.
fn restamp_mut(batch: &mut [u8], stamp: ProducerStamp) {
    let mut fresh = [0u8; STAMP_FIELDS.end - STAMP_FIELDS.start];
    fresh[0..8].copy_from_slice(&stamp.producer_id.to_be_bytes());
    fresh[8..10].copy_from_slice(&stamp.producer_epoch.to_be_bytes());
    fresh[10..14].copy_from_slice(&stamp.base_sequence.to_be_bytes());
    // The CRC-covered prefix up to the end of the stamp fields: zeros, then old ^ new.
    let mut diff = [0u8; STAMP_FIELDS.end - CRC_START];
    for (i, (old, new)) in batch[STAMP_FIELDS].iter().zip(fresh).enumerate() {
        diff[STAMP_FIELDS.start - CRC_START + i] = old ^ new;
    }
    let zeros = [0u8; STAMP_FIELDS.end - CRC_START];
    let rest = batch.len() - STAMP_FIELDS.end;
    let delta = shift_past_zeros(crc32c::crc32c(&diff) ^ crc32c::crc32c(&zeros), rest);
    let old = u32::from_be_bytes(batch[13..17].try_into().expect("four bytes"));
    batch[STAMP_FIELDS].copy_from_slice(&fresh);
    batch[13..17].copy_from_slice(&(old ^ delta).to_be_bytes());
}

/// Writes `offset` into the `base_offset` field of a batch (outside the CRC).
pub fn stamp_base_offset(batch: &mut [u8], offset: i64) {
    batch[0..8].copy_from_slice(&offset.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(ts: i64, key: Option<&'static [u8]>, value: &'static [u8]) -> Record {
        Record {
            timestamp: ts,
            key: key.map(Bytes::from_static),
            value: Some(Bytes::from_static(value)),
            headers: vec![Header { key: "h".into(), value: Some(Bytes::from_static(b"v")) }],
        }
    }

    #[test]
    fn byte_vector_of_a_one_record_batch() {
        let mut b = BatchBuilder::new();
        b.push(&Record {
            timestamp: 1000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
        });
        let stamp = ProducerStamp { producer_id: 7, producer_epoch: 1, base_sequence: 5 };
        let bytes = b.seal(Compression::None, None, stamp);
        // record: body length 8 (zig-zag 0x10), attrs 0, ts_delta 0, offset_delta 0,
        // key length 1 (0x02) 'k', value length 1 (0x02) 'v', header count 0
        let record = [0x10, 0x00, 0x00, 0x00, 0x02, b'k', 0x02, b'v', 0x00];
        let mut want = Vec::new();
        want.extend_from_slice(&0i64.to_be_bytes());
        want.extend_from_slice(&((45 + record.len()) as u32).to_be_bytes());
        want.push(1);
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&0u16.to_be_bytes());
        want.extend_from_slice(&0u32.to_be_bytes());
        want.extend_from_slice(&1000i64.to_be_bytes());
        want.extend_from_slice(&1000i64.to_be_bytes());
        want.extend_from_slice(&7i64.to_be_bytes());
        want.extend_from_slice(&1i16.to_be_bytes());
        want.extend_from_slice(&5i32.to_be_bytes());
        want.extend_from_slice(&1u32.to_be_bytes());
        want.extend_from_slice(&record);
        let crc = crc32c::crc32c(&want[17..]);
        want[13..17].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(&bytes[..], &want[..]);
        let batch = RecordBatch::from_bytes(bytes).unwrap();
        assert_eq!(batch.header().last_sequence(), 5);
        let recs = batch.records(1 << 20).unwrap();
        assert_eq!(recs[0].key.as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn incompressible_batch_goes_uncompressed() {
        let mut b = BatchBuilder::new();
        b.push(&rec(1, None, b"x"));
        let sealed = b.seal(Compression::Zstd, None, ProducerStamp::NONE);
        assert_eq!(BatchHeader::parse(&sealed).unwrap().unwrap().compression, Compression::None);
        let mut b = BatchBuilder::new();
        for i in 0..100 {
            b.push(&rec(i, Some(b"key"), b"the same text again and again and again"));
        }
        let sealed = b.seal(Compression::Zstd, None, ProducerStamp::NONE);
        assert_eq!(BatchHeader::parse(&sealed).unwrap().unwrap().compression, Compression::Zstd);
    }

    #[test]
    fn any_flipped_bit_after_the_offset_is_detected() {
        let mut b = BatchBuilder::new();
        b.push(&rec(5, Some(b"key"), b"value"));
        let sealed = b.seal(Compression::None, None, ProducerStamp::NONE).to_vec();
        for i in 12..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                assert!(RecordBatch::from_bytes(Bytes::from(bad)).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn truncated_batch_needs_more() {
        let mut b = BatchBuilder::new();
        b.push(&rec(5, None, b"value"));
        let sealed = b.seal(Compression::None, None, ProducerStamp::NONE);
        for n in 0..sealed.len() {
            assert_eq!(check_batch(&sealed[..n]).unwrap(), None);
        }
    }

    #[test]
    fn restamp_changes_producer_fields_and_keeps_crc_valid() {
        let mut b = BatchBuilder::new();
        b.push(&rec(5, None, b"value"));
        let sealed = b.seal(Compression::None, None, ProducerStamp::NONE);
        let stamp = ProducerStamp { producer_id: 9, producer_epoch: 2, base_sequence: 40 };
        let re = RecordBatch::from_bytes(restamp(&sealed, stamp)).unwrap();
        assert_eq!(re.header().producer, stamp);
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(10, 5), 15);
        // Hostile inputs do not overflow.
        assert_eq!(increment_sequence(i32::MAX, i32::MIN), i32::MAX);
        let _ = increment_sequence(i32::MIN, i32::MIN);
    }

    fn with_crc(mut b: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&b[17..]);
        b[13..17].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn regression_huge_record_count_is_refused() {
        // Found in review: last_offset_delta >= 2^31 made last_sequence() overflow.
        let mut b = BatchBuilder::new();
        b.push(&rec(1, None, b"v"));
        let mut v = b
            .seal(Compression::None, None, ProducerStamp { producer_id: 1, producer_epoch: 0, base_sequence: 0 })
            .to_vec();
        v[19..23].copy_from_slice(&[0x80, 0, 0, 0]);
        v[53..57].copy_from_slice(&[0x80, 0, 0, 1]);
        assert!(RecordBatch::from_bytes(Bytes::from(with_crc(v))).is_err());
    }

    #[test]
    fn regression_claimed_record_count_must_match_the_records() {
        let mut b = BatchBuilder::new();
        b.push(&rec(1, None, b"v"));
        b.push(&rec(2, None, b"w"));
        let mut v = b.seal(Compression::None, None, ProducerStamp::NONE).to_vec();
        // Claim 3 records while holding 2.
        v[19..23].copy_from_slice(&2u32.to_be_bytes());
        v[53..57].copy_from_slice(&3u32.to_be_bytes());
        let batch = RecordBatch::from_bytes(Bytes::from(with_crc(v))).unwrap();
        assert!(matches!(
            batch.validate_records(1 << 20),
            Err(DecodeError::RecordCountMismatch { claimed: 3, found: 2 })
        ));
        let mut b = BatchBuilder::new();
        b.push(&rec(1, None, b"v"));
        let ok = RecordBatch::from_bytes(b.seal(Compression::Lz4, None, ProducerStamp::NONE)).unwrap();
        ok.validate_records(1 << 20).unwrap();
    }

    #[test]
    fn regression_base_offset_near_i64_max_is_an_error_not_a_panic() {
        let mut b = BatchBuilder::new();
        b.push(&rec(1, None, b"v"));
        b.push(&rec(2, None, b"w"));
        let mut v = b.seal(Compression::None, None, ProducerStamp::NONE).to_vec();
        stamp_base_offset(&mut v, i64::MAX);
        let batch = RecordBatch::from_bytes(Bytes::from(v)).unwrap();
        assert!(batch.records(1 << 20).is_err());
        assert_eq!(batch.header().last_offset(), i64::MAX);
    }

    #[test]
    fn regression_repeated_offset_deltas_are_refused() {
        // Two records both claiming offset delta 0.
        let mut b = BatchBuilder::new();
        b.push(&rec(1, None, b"v"));
        let one = b.seal(Compression::None, None, ProducerStamp::NONE).to_vec();
        let rec_bytes = one[BATCH_HEADER_LEN..].to_vec();
        let mut v = one.clone();
        v.extend_from_slice(&rec_bytes);
        let len = (v.len() - 12) as u32;
        v[8..12].copy_from_slice(&len.to_be_bytes());
        v[19..23].copy_from_slice(&1u32.to_be_bytes());
        v[53..57].copy_from_slice(&2u32.to_be_bytes());
        let batch = RecordBatch::from_bytes(Bytes::from(with_crc(v))).unwrap();
        assert!(batch.records(1 << 20).is_err());
        assert!(batch.validate_records(1 << 20).is_err());
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            any::<i64>().prop_map(|t| t >> 2),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                ("[a-z]{0,8}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16))),
                0..4,
            ),
        )
            .prop_map(|(timestamp, key, value, headers)| Record {
                timestamp,
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers
                    .into_iter()
                    .map(|(key, value)| Header { key, value: value.map(Bytes::from) })
                    .collect(),
            })
    }

    proptest! {
        /// The in-place restamp (incremental CRC) gives the same bytes as a fresh CRC,
        /// for any batch and any stamp, owned or shared.
        #[test]
        fn restamp_in_place_equals_restamp_by_copy(
            records in proptest::collection::vec(arb_record(), 1..20),
            codec in proptest::sample::select(Compression::ALL.to_vec()),
            first in (any::<i64>(), any::<i16>(), any::<i32>()),
            second in (any::<i64>(), any::<i16>(), any::<i32>()),
        ) {
            let mut b = BatchBuilder::new();
            for r in &records {
                b.push(r);
            }
            let sealed = b.seal(codec, None, ProducerStamp::NONE);
            for (producer_id, producer_epoch, base_sequence) in [first, second] {
                let stamp = ProducerStamp { producer_id, producer_epoch, base_sequence };
                let copied = restamp(&sealed, stamp);
                let owned = restamp_owned(Bytes::copy_from_slice(&sealed), stamp);
                let kept = sealed.clone();
                let shared = restamp_owned(sealed.clone(), stamp);
                drop(kept);
                prop_assert_eq!(&owned, &copied);
                prop_assert_eq!(&shared, &copied);
                let h = check_batch(&owned).unwrap().unwrap();
                prop_assert_eq!(h.producer, stamp);
                // And again from a stamped batch (a later epoch bump).
                let again = restamp_owned(owned, ProducerStamp::NONE);
                prop_assert_eq!(&again[..], &sealed[..]);
            }
        }

        /// A builder on a reused buffer (with old bytes in it) seals the same batch as a
        /// fresh one.
        #[test]
        fn a_reused_buffer_seals_the_same_batch(
            records in proptest::collection::vec(arb_record(), 1..20),
            junk in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let (mut fresh, mut reused) = (BatchBuilder::new(), BatchBuilder::with_buffer(BytesMut::from(&junk[..])));
            for r in &records {
                fresh.push(r);
                reused.push(r);
            }
            prop_assert_eq!(
                fresh.seal(Compression::None, None, ProducerStamp::NONE),
                reused.seal(Compression::None, None, ProducerStamp::NONE)
            );
        }

        /// `push_within` appends exactly when `record_size` says the record fits.
        #[test]
        fn push_within_agrees_with_record_size_and_push(
            records in proptest::collection::vec(arb_record(), 1..30),
            limit in 0usize..4096,
        ) {
            let (mut a, mut b) = (BatchBuilder::new(), BatchBuilder::new());
            for r in &records {
                let fits = a.is_empty() || a.size_bytes() + a.record_size(r) <= limit;
                if fits {
                    a.push(r);
                }
                prop_assert_eq!(b.push_within(r, limit), fits);
            }
            prop_assert_eq!(a.len(), b.len());
            prop_assert_eq!(
                a.seal(Compression::None, None, ProducerStamp::NONE),
                b.seal(Compression::None, None, ProducerStamp::NONE)
            );
        }

        #[test]
        fn batches_round_trip_with_every_codec(
            records in proptest::collection::vec(arb_record(), 1..20),
            codec in proptest::sample::select(Compression::ALL.to_vec()),
            offset in 0i64..1 << 40,
        ) {
            let base_ts = records[0].timestamp;
            let mut b = BatchBuilder::new();
            let mut predicted = BATCH_HEADER_LEN;
            for r in &records {
                let r = Record { timestamp: base_ts.wrapping_add(r.timestamp % 1000), ..r.clone() };
                predicted += b.record_size(&r);
                b.push(&r);
            }
            prop_assert_eq!(b.size_bytes(), predicted);
            let mut sealed = b.seal(codec, None, ProducerStamp::NONE).to_vec();
            stamp_base_offset(&mut sealed, offset);
            let batch = RecordBatch::from_bytes(Bytes::from(sealed)).unwrap();
            let got = batch.records(1 << 24).unwrap();
            prop_assert_eq!(got.len(), records.len());
            for (i, (g, r)) in got.iter().zip(&records).enumerate() {
                prop_assert_eq!(g.offset, offset + i as i64);
                prop_assert_eq!(g.timestamp, base_ts.wrapping_add(r.timestamp % 1000));
                prop_assert_eq!(&g.key, &r.key);
                prop_assert_eq!(&g.value, &r.value);
                prop_assert_eq!(&g.headers, &r.headers);
            }
        }
    }
}

#[cfg(test)]
#[path = "batch_mutation_tests.rs"]
mod mutation_tests;
