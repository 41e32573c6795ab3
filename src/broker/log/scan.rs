//! Sequential scans over a segment's batches: used by recovery (headers only for sealed
//! segments, headers and CRC for the newest one) and by
//! [`super::PartitionLog::for_each_header`].
//!
//! A scan reads the file in large positional chunks, so walking the headers of many small
//! batches costs one `pread` per chunk, not one per batch; a batch larger than a chunk is
//! skipped without being read when only headers are checked.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::protocol::batch::{check_batch, BatchHeader, BATCH_HEADER_LEN};
use crate::protocol::DecodeError;

/// Chunk read by a scan when the bytes it needs are not buffered yet.
pub(super) const SCAN_CHUNK_BYTES: usize = 256 * 1024;

/// How much of each batch a scan checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// Header structure and offset contiguity; the records section is not read.
    Headers,
    /// Headers plus the CRC over each whole batch.
    Crc,
}

/// A positional reader with one reusable buffer.
pub(super) struct ChunkReader<'a> {
    file: &'a File,
    len: u64,
    chunk: usize,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> ChunkReader<'a> {
    /// Reads `file` up to byte `len`, `chunk` bytes at a time (more when asked for more).
    pub fn new(file: &'a File, len: u64, chunk: usize) -> Self {
        ChunkReader { file, len, chunk, buf: Vec::new(), buf_start: 0 }
    }

    /// Up to `need` bytes at `pos`; fewer only when the readable length ends first.
    pub fn bytes_at(&mut self, pos: u64, need: usize) -> io::Result<&[u8]> {
        let pos = pos.min(self.len);
        let end = pos.saturating_add(need as u64).min(self.len);
        let buffered = pos >= self.buf_start && end <= self.buf_start + self.buf.len() as u64;
        if !buffered {
            let n = (need.max(self.chunk) as u64).min(self.len - pos) as usize;
            self.buf.resize(n, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.buf_start = pos;
        }
        let from = (pos - self.buf_start) as usize;
        let to = (end - self.buf_start) as usize;
        Ok(&self.buf[from..to])
    }
}

/// What is wrong with the first invalid batch of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    /// The header or the batch does not decode, is torn, or fails its CRC.
    Decode(DecodeError),
    /// The batch decodes but its base offset does not follow the previous batch.
    OffsetMismatch {
        /// The offset the batch should start at.
        expected: i64,
        /// Its stored base offset.
        found: i64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Decode(e) => e.fmt(f),
            Problem::OffsetMismatch { expected, found } => {
                write!(f, "base offset {found} where {expected} was expected")
            }
        }
    }
}

/// Where and why a scan stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScanStop {
    /// Byte position of the first invalid batch: everything before it is valid.
    pub position: u64,
    /// What is wrong with it.
    pub problem: Problem,
}

/// The result of scanning a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScanEnd {
    /// Bytes of valid batches from the start of the file (the scan's start included).
    pub valid_len: u64,
    /// Offset after the last valid batch (the segment's base offset when none).
    pub next_offset: i64,
    /// Number of valid batches.
    pub batches: u64,
    /// Set when the scan stopped at an invalid batch rather than at the end of the file.
    pub stop: Option<ScanStop>,
}

/// Where a scan starts: a batch boundary of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Start {
    /// Byte position of the first batch to visit.
    pub position: u64,
    /// Its base offset.
    pub offset: i64,
    /// The segment's base offset (relative offsets are counted from it).
    pub segment_base: i64,
}

impl Start {
    /// The beginning of the segment whose base offset is `base`.
    pub fn segment(base: i64) -> Start {
        Start { position: 0, offset: base, segment_base: base }
    }
}

/// Walks the batches of a segment from `start` (whose batch must have base offset
/// `start.offset`), calling `on_batch(position, header)` for each valid one, in order,
/// until the end of the first `len` bytes or the first invalid batch.
///
/// Invalid: a header that does not parse, a batch cut short by the end of the file, a CRC
/// mismatch ([`Verify::Crc`] only), a base offset that does not continue the previous
/// batch, or a batch whose position or relative offset does not fit the index's `u32`.
/// I/O errors are returned as such.
pub(super) fn scan_segment(
    file: &File,
    len: u64,
    start: Start,
    verify: Verify,
    mut on_batch: impl FnMut(u64, &BatchHeader),
) -> io::Result<ScanEnd> {
    let mut reader = ChunkReader::new(file, len, SCAN_CHUNK_BYTES);
    let mut end = ScanEnd { valid_len: start.position, next_offset: start.offset, batches: 0, stop: None };
    while end.valid_len < len {
        let pos = end.valid_len;
        match check_at(&mut reader, pos, len, verify)? {
            Err(e) => {
                end.stop = Some(ScanStop { position: pos, problem: Problem::Decode(e) });
                break;
            }
            Ok(h) => {
                if h.base_offset != end.next_offset {
                    let problem = Problem::OffsetMismatch { expected: end.next_offset, found: h.base_offset };
                    end.stop = Some(ScanStop { position: pos, problem });
                    break;
                }
                if let Some(e) = index_overflow(pos, h.base_offset - start.segment_base) {
                    end.stop = Some(ScanStop { position: pos, problem: Problem::Decode(e) });
                    break;
                }
                on_batch(pos, &h);
                end.valid_len += h.total_len() as u64;
                end.next_offset = h.last_offset() + 1;
                end.batches += 1;
            }
        }
    }
    Ok(end)
}

/// Checks the batch at `pos`: its header, that it ends within `len`, and its CRC when
/// asked. The outer `Result` is I/O, the inner one what is wrong with the batch.
fn check_at(
    reader: &mut ChunkReader<'_>,
    pos: u64,
    len: u64,
    verify: Verify,
) -> io::Result<Result<BatchHeader, DecodeError>> {
    let head = reader.bytes_at(pos, BATCH_HEADER_LEN)?;
    let torn = |need: usize, have: u64| DecodeError::UnexpectedEof {
        field: "record_batch",
        offset: usize::try_from(pos).unwrap_or(usize::MAX),
        need,
        have: usize::try_from(have).unwrap_or(usize::MAX),
    };
    let h = match BatchHeader::parse(head) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(Err(torn(BATCH_HEADER_LEN, len - pos))),
        Err(e) => return Ok(Err(e)),
    };
    if (h.total_len() as u64) > len - pos {
        return Ok(Err(torn(h.total_len(), len - pos)));
    }
    if verify == Verify::Crc {
        let whole = reader.bytes_at(pos, h.total_len())?;
        match check_batch(whole) {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(Err(torn(h.total_len(), whole.len() as u64))),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(h))
}

/// `Some` when a batch at `pos` with relative offset `rel` cannot be indexed (the writer
/// never produces such a segment; a foreign or damaged file might).
fn index_overflow(pos: u64, rel: i64) -> Option<DecodeError> {
    if u32::try_from(pos).is_err() {
        return Some(DecodeError::InvalidValue { field: "segment position", value: pos as i64 });
    }
    if u32::try_from(rel).is_err() {
        return Some(DecodeError::InvalidValue { field: "relative offset", value: rel });
    }
    None
}
