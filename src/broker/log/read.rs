//! Reads in two steps: [`PartitionLog::read_plan`] decides under the owner's lock where a
//! read starts and how far it may go; [`ReadPlan::read`] reads and checks the bytes
//! without the lock, so a long read never holds up appends.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::scan::ChunkReader;
use super::segment::parse_stored;
use super::{LogError, PartitionLog};
use crate::protocol::batch::{check_batch, BATCH_HEADER_LEN};

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Up to the end of the log, fsync'd or not.
    End,
    /// Only what is below the durable point ([`PartitionLog::durable_offset`]).
    Durable,
}

/// A read decided under the lock, to run without it.
#[derive(Debug)]
pub struct ReadPlan {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes of the segment file that may be read (whole, validated batches).
    limit: u64,
    /// Where the scan for `offset` starts (an index entry at or before it).
    start: u64,
    offset: i64,
    max_bytes: usize,
}

impl PartitionLog {
    /// Plans a read of whole batches from the one that contains `offset`, as many as fit
    /// in `max_bytes` but at least that one, within one segment and within `bound`.
    /// `None` when nothing can be read at `offset` yet (it is the end, or not durable
    /// with [`ReadBound::Durable`]); [`LogError::OffsetOutOfRange`] outside
    /// `[log_start_offset, end_offset]`.
    pub fn read_plan(&self, offset: i64, max_bytes: usize, bound: ReadBound) -> Result<Option<ReadPlan>, LogError> {
        let (start, end) = (self.log_start_offset(), self.end_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { requested: offset, start, end });
        }
        let upto = match bound {
            ReadBound::End => end,
            ReadBound::Durable => self.durable.offset().min(end),
        };
        if offset >= upto {
            return Ok(None);
        }
        let seg = self.segment_for(offset);
        let limit = match bound {
            ReadBound::End => seg.size(),
            ReadBound::Durable => self.durable.readable_bytes(seg.base_offset(), seg.next_offset(), seg.size()),
        };
        Ok(Some(ReadPlan {
            file: Arc::clone(seg.log_file()),
            path: seg.log_path().to_path_buf(),
            limit,
            start: seg.index_position(offset),
            offset,
            max_bytes,
        }))
    }
}

impl ReadPlan {
    /// Reads the planned batches. Every batch returned passes its CRC: bytes damaged on
    /// disk after they were validated (sealed segments are not CRC-checked at open) are
    /// reported, never served. A bad first batch is an error; a later one ends the read
    /// before it, so the next read from its offset reports it.
    pub fn read(&self) -> Result<Bytes, LogError> {
        let io = |e| LogError::Io { op: "read segment", path: self.path.clone(), source: e };
        let mut pos = self.start;
        if pos >= self.limit {
            return Ok(Bytes::new());
        }
        // Index entries are at most ~index_interval_bytes apart: a small chunk suffices.
        let mut reader = ChunkReader::new(&self.file, self.limit, 16 * 1024);
        let header = loop {
            let head = reader.bytes_at(pos, BATCH_HEADER_LEN).map_err(io)?;
            let h = parse_stored(&self.path, self.limit, head, pos)?;
            if h.last_offset() >= self.offset {
                break h;
            }
            pos += h.total_len() as u64;
        };
        let first = header.total_len();
        let want = if first >= self.max_bytes {
            first
        } else {
            usize::try_from(self.limit - pos).unwrap_or(usize::MAX).min(self.max_bytes)
        };
        let mut buf = BytesMut::zeroed(want);
        self.file.read_exact_at(&mut buf, pos).map_err(io)?;
        let mut end = 0;
        while buf.len() - end >= BATCH_HEADER_LEN {
            let at = pos + end as u64;
            let h = match parse_stored(&self.path, self.limit, &buf[end..], at) {
                Ok(h) => h,
                Err(e) if end == 0 => return Err(e),
                Err(_) => break,
            };
            if h.total_len() > buf.len() - end {
                break;
            }
            if let Err(source) = check_batch(&buf[end..end + h.total_len()]) {
                if end == 0 {
                    return Err(LogError::Corrupt { path: self.path.clone(), position: at, source });
                }
                break;
            }
            end += h.total_len();
        }
        debug_assert!(end >= first, "the first batch is whole and valid here");
        buf.truncate(end);
        Ok(buf.freeze())
    }
}
