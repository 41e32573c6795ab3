//! One segment: a `.log` file of back-to-back batches and its sparse `.index`, named
//! after the segment's base offset (`{base_offset:020}.log`, Kafka naming).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, ErrorKind, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{self, OffsetIndex};
use super::scan::ChunkReader;
use super::LogError;
use crate::protocol::batch::{BatchHeader, BATCH_HEADER_LEN};
use crate::protocol::DecodeError;

/// Suffix of segment data files.
pub(super) const LOG_SUFFIX: &str = ".log";
/// Suffix of segment index files.
pub(super) const INDEX_SUFFIX: &str = ".index";

/// Path of the file for segment `base_offset` with `suffix`.
pub(super) fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}{suffix}"))
}

/// The base offset encoded in a `.log` file name, when the name is exactly what
/// [`segment_path`] produces.
pub(super) fn parse_log_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(LOG_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse::<i64>().ok()
}

/// A segment of the partition log.
#[derive(Debug)]
pub(super) struct Segment {
    base_offset: i64,
    next_offset: i64,
    size: u64,
    max_timestamp: Option<i64>,
    log_path: PathBuf,
    index_path: PathBuf,
    log: Arc<File>,
    index: OffsetIndex,
    /// Open only on the active segment; `None` after an index write failed (the index
    /// file is then rebuilt at the next open, the in-memory index stays right).
    index_writer: Option<BufWriter<File>>,
}

impl Segment {
    /// Creates the empty files of a new segment (the `.log` must not exist yet).
    pub fn create(dir: &Path, base_offset: i64, index_interval_bytes: u32) -> Result<Segment, LogError> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        let index_path = segment_path(dir, base_offset, INDEX_SUFFIX);
        let log = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&log_path)
            .map_err(LogError::io("create segment", &log_path))?;
        let index_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&index_path)
            .map_err(LogError::io("create index", &index_path))?;
        Ok(Segment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: None,
            log_path,
            index_path,
            log: Arc::new(log),
            index: OffsetIndex::new(index_interval_bytes),
            index_writer: Some(BufWriter::new(index_file)),
        })
    }

    /// A segment recovered from disk: `log` holds `size` bytes of valid batches ending
    /// before `next_offset`, and `index` was rebuilt from them. The index file is made to
    /// match, and opened for appending when `active`.
    #[allow(clippy::too_many_arguments)]
    pub fn recovered(
        dir: &Path,
        base_offset: i64,
        next_offset: i64,
        size: u64,
        max_timestamp: Option<i64>,
        log: File,
        index: OffsetIndex,
        active: bool,
    ) -> Result<(Segment, index::Reconciled), LogError> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        let index_path = segment_path(dir, base_offset, INDEX_SUFFIX);
        let reconciled = index::reconcile(&index_path, &index).map_err(LogError::io("rebuild index", &index_path))?;
        let index_writer = if active {
            let f =
                OpenOptions::new().append(true).open(&index_path).map_err(LogError::io("open index", &index_path))?;
            Some(BufWriter::new(f))
        } else {
            None
        };
        let seg = Segment {
            base_offset,
            next_offset,
            size,
            max_timestamp,
            log_path,
            index_path,
            log: Arc::new(log),
            index,
            index_writer,
        };
        Ok((seg, reconciled))
    }

    /// Offset of the first batch (the name of the files).
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset after the last batch.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes of batches in the `.log` file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Largest `max_timestamp` of the batches, `None` when empty.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp
    }

    /// Number of in-memory index entries.
    #[cfg(test)]
    pub fn index_entries_for_test(&self) -> usize {
        self.index.entries().len()
    }

    /// Path of the `.log` file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The `.log` file.
    pub fn log_file(&self) -> &Arc<File> {
        &self.log
    }

    /// Writes `batch` (whose header is `header`) with `base_offset` stamped into its
    /// first 8 bytes, in one `writev`, and indexes it. `batch.len()` is checked by the
    /// caller. On error the file may hold part of the batch: call [`Segment::rollback`].
    pub fn append(&mut self, batch: &[u8], header: &BatchHeader, base_offset: i64) -> io::Result<u64> {
        let position = self.size;
        let stamp = base_offset.to_be_bytes();
        let mut bufs = [IoSlice::new(&stamp), IoSlice::new(&batch[8..])];
        write_all_vectored(&self.log, &mut bufs)?;
        let len = batch.len() as u64;
        self.size += len;
        self.next_offset = base_offset + i64::from(header.last_offset_delta) + 1;
        self.max_timestamp = Some(self.max_timestamp.map_or(header.max_timestamp, |m| m.max(header.max_timestamp)));
        // The caller rolls before the relative offset or the position overflows u32.
        let rel = u32::try_from(base_offset - self.base_offset).unwrap_or(u32::MAX);
        let pos32 = u32::try_from(position).unwrap_or(u32::MAX);
        if let Some(entry) = self.index.observe(rel, pos32, len) {
            if let Some(w) = self.index_writer.as_mut() {
                if let Err(e) = index::write_entry(w, entry) {
                    tracing::warn!(path = %self.index_path.display(), error = %e,
                        "index write failed; the index will be rebuilt at the next open");
                    self.index_writer = None;
                }
            }
        }
        Ok(position)
    }

    /// Cuts the `.log` file back to the size of its last whole batch, after a failed
    /// append.
    pub fn rollback(&self) -> io::Result<()> {
        self.log.set_len(self.size)
    }

    /// Pushes buffered index entries to the OS (not fsync'd: the index is a cache).
    pub fn flush_index(&mut self) {
        if let Some(w) = self.index_writer.as_mut() {
            if let Err(e) = w.flush() {
                tracing::warn!(path = %self.index_path.display(), error = %e,
                    "index flush failed; the index will be rebuilt at the next open");
                self.index_writer = None;
            }
        }
    }

    /// Makes this segment read-only: flushes and closes its index writer. The log file is
    /// fsync'd later, by a sync round.
    pub fn close_index(&mut self) {
        self.flush_index();
        self.index_writer = None;
    }

    /// Where a scan for `offset` (in `[base_offset, next_offset)`) starts: the position
    /// of the last indexed batch at or below it.
    pub fn index_position(&self, offset: i64) -> u64 {
        let rel = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
        u64::from(self.index.lookup(rel))
    }

    /// Byte position of the batch starting at `offset` (the file size for
    /// `next_offset`). `offset` must be a batch boundary within the segment.
    pub fn position_of(&self, offset: i64) -> Result<u64, LogError> {
        if offset == self.next_offset {
            return Ok(self.size);
        }
        let mut pos = self.index_position(offset);
        let mut reader = ChunkReader::new(&self.log, self.size, 16 * 1024);
        loop {
            let head = reader.bytes_at(pos, BATCH_HEADER_LEN).map_err(LogError::io("read segment", &self.log_path))?;
            let h = parse_stored(&self.log_path, self.size, head, pos)?;
            if h.base_offset >= offset {
                if h.base_offset != offset {
                    let found = h.base_offset;
                    return Err(LogError::OffsetMismatch {
                        path: self.log_path.clone(),
                        position: pos,
                        expected: offset,
                        found,
                    });
                }
                return Ok(pos);
            }
            pos += h.total_len() as u64;
        }
    }

    /// Removes the segment's files (index first: an index without its log would be stale,
    /// a log without its index is rebuilt).
    pub fn delete_files(&self) -> Result<(), LogError> {
        remove_if_exists(&self.index_path).map_err(LogError::io("delete index", &self.index_path))?;
        fs::remove_file(&self.log_path).map_err(LogError::io("delete segment", &self.log_path))
    }
}

/// Parses the header of a batch at `pos` of the segment file `path`, whose first `size`
/// bytes recovery or append validated: a failure means the file changed under us.
pub(super) fn parse_stored(path: &Path, size: u64, head: &[u8], pos: u64) -> Result<BatchHeader, LogError> {
    let corrupt = |source| LogError::Corrupt { path: path.to_path_buf(), position: pos, source };
    match BatchHeader::parse(head) {
        Ok(Some(h)) if pos + h.total_len() as u64 <= size => Ok(h),
        Ok(_) => Err(corrupt(DecodeError::UnexpectedEof {
            field: "record_batch",
            offset: usize::try_from(pos).unwrap_or(usize::MAX),
            need: BATCH_HEADER_LEN,
            have: usize::try_from(size.saturating_sub(pos)).unwrap_or(usize::MAX),
        })),
        Err(e) => Err(corrupt(e)),
    }
}

/// Removes the `.index` then the `.log` file of segment `base_offset` in `dir`, if they
/// exist.
pub(super) fn remove_segment_files(dir: &Path, base_offset: i64) -> Result<(), LogError> {
    for suffix in [INDEX_SUFFIX, LOG_SUFFIX] {
        let path = segment_path(dir, base_offset, suffix);
        remove_if_exists(&path).map_err(LogError::io("remove segment", &path))?;
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `write_all` for a vectored write (`Write::write_all_vectored` is unstable).
fn write_all_vectored(mut file: &File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match file.write_vectored(bufs) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "failed to write whole batch")),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_rejected() {
        let p = segment_path(Path::new("/d"), 42, LOG_SUFFIX);
        assert_eq!(p, Path::new("/d/00000000000000000042.log"));
        assert_eq!(parse_log_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("0000000000000000004x.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.index"), None);
        assert_eq!(parse_log_name("99999999999999999999.log"), None);
    }
}
