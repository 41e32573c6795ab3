//! The partition log: a per-partition, segmented, append-only log on disk.
//!
//! # Format
//!
//! A partition directory holds segments named after their base offset (Kafka naming):
//! `{base_offset:020}.log` holds record batches back to back, exactly as producers sealed
//! them (still compressed) with the broker-assigned offset written into `base_offset`
//! (bytes 0..8, outside the CRC), so a fetch returns file bytes as they are.
//! `{base_offset:020}.index` is a sparse index of 8-byte entries (relative offset `u32`
//! BE, file position `u32` BE): one for the first batch of the segment, then one at most
//! every [`LogConfig::index_interval_bytes`] of log. It is a cache, rebuilt from the log
//! when missing or inconsistent.
//!
//! # Durability
//!
//! [`PartitionLog::append`] writes into the page cache (one `writev`, no fsync).
//! Durability comes from [`PartitionLog::flush`] or from fsyncing the file returned by
//! [`PartitionLog::sync_target`] outside the caller's lock. A segment roll fsyncs the
//! segment it closes (and the directory after creating the next), so syncing the active
//! segment makes every offset below the returned end offset durable.
//!
//! # Recovery
//!
//! [`PartitionLog::open`] scans the newest segment in full (structure, CRC, offset
//! contiguity) and truncates it at the first invalid batch: only bytes after the last
//! valid batch are cut. Older segments, fsync'd at roll, have every header checked
//! (structure and contiguity, not the CRC); a fault there fails the open with
//! [`LogError::Corrupt`] or [`LogError::OffsetMismatch`] instead of dropping data that
//! was acknowledged. Opening therefore reads every header of the partition once.
//!
//! # Reads
//!
//! [`PartitionLog::read`] returns whole batches from a single segment: a read that
//! reaches the end of a segment stops there and the caller fetches again from the next
//! offset. Every batch returned has its CRC checked again: one damaged on disk since it
//! was written is never served; a read that starts at it fails with
//! [`LogError::Corrupt`].

mod index;
mod recovery;
mod scan;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::broker::disk::{SyncKind, Syncer};
use crate::protocol::batch::{BatchHeader, BATCH_HEADER_LEN};
use crate::protocol::DecodeError;
use recovery::{recover_segment, stop_to_error, sync_dir};
use scan::{scan_segment, Verify};
use segment::Segment;

/// Default [`LogConfig::segment_bytes`]: 256 MiB, few enough files for a busy partition
/// and small enough that retention frees space in reasonable steps.
pub const DEFAULT_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
/// Largest [`LogConfig::segment_bytes`]: index entries hold `u32` file positions.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;
/// Default [`LogConfig::index_interval_bytes`]: 4 KiB, so a read scans at most about one
/// page of headers past its index entry, for an index of 0.2% of the log.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;

/// Settings of a partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment when appending a batch would make the active one exceed
    /// this many bytes. Default [`DEFAULT_SEGMENT_BYTES`]; values above
    /// [`MAX_SEGMENT_BYTES`] are clamped to it. A batch larger than this still goes into
    /// a segment of its own; 0 means one batch per segment.
    pub segment_bytes: u64,
    /// Log bytes between two sparse index entries (the first batch of a segment always
    /// has one). Default [`DEFAULT_INDEX_INTERVAL_BYTES`]. Smaller: faster reads from a
    /// random offset, bigger index; 0 indexes every batch.
    pub index_interval_bytes: u32,
    /// Delete the oldest segments while the partition holds more than this many bytes
    /// (the active segment is never deleted, so the partition may stay above it).
    /// Default `None`: no size limit.
    pub retention_bytes: Option<u64>,
    /// Delete the oldest segments whose newest record timestamp (the largest batch
    /// `max_timestamp`, set by producers) is older than this. Default `None`: keep
    /// forever.
    pub retention: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            retention_bytes: None,
            retention: None,
        }
    }
}

/// What can go wrong in the partition log. I/O and corruption errors name the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("append", "fsync segment", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A stored batch is invalid where data must be intact (a sealed segment, or a
    /// segment changed behind the log's back).
    #[error("corrupt batch at position {position} of {}: {source}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the batch in the file.
        position: u64,
        /// What is wrong with it.
        #[source]
        source: DecodeError,
    },
    /// A segment or batch does not start at the offset its predecessor ends at.
    #[error("offset gap at position {position} of {}: found {found}, expected {expected}", path.display())]
    OffsetMismatch {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the batch in the file (0 for a segment's base offset).
        position: u64,
        /// The offset that should come next.
        expected: i64,
        /// The offset found.
        found: i64,
    },
    /// A read asked for an offset outside `[start, end]`.
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: i64,
        /// The log start offset.
        start: i64,
        /// The log end offset.
        end: i64,
    },
    /// The bytes handed to [`PartitionLog::append`] are not the batch their header
    /// describes (a caller bug).
    #[error("cannot append a batch of {len} bytes: {reason}")]
    InvalidBatch {
        /// Length of the bytes given.
        len: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The log refuses appends and fsyncs after an earlier failure left its state in
    /// doubt: a partial append that could not be cut off (appending more would leave
    /// garbage between batches) or a failed fsync (the kernel may have dropped the dirty
    /// pages, so a later successful fsync would prove nothing). Reads still work; reopen
    /// the log to recover, which re-checks the tail.
    #[error("{} refuses writes after {cause}; reopen the log", path.display())]
    Unwritable {
        /// The active segment file.
        path: PathBuf,
        /// The earlier failure.
        cause: &'static str,
    },
}

impl LogError {
    /// Maps an `io::Error` from `op` on `path`.
    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LogError + 'a {
        move |source| LogError::Io { op, path: path.to_path_buf(), source }
    }
}

/// What [`PartitionLog::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Valid batches found in all segments.
    pub batches: u64,
    /// Bytes cut from the end of the newest segment.
    pub truncated_bytes: u64,
    /// Why the tail was cut (problem, position, file and next offset), when it was.
    pub reason: Option<String>,
    /// Index files rewritten because they were missing or did not match the log.
    pub indexes_rebuilt: usize,
}

/// Where [`PartitionLog::append`] put a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record.
    pub base_offset: i64,
    /// Offset of the last record; the log end offset is now `last_offset + 1`.
    pub last_offset: i64,
    /// Base offset of the segment that holds the batch.
    pub segment_base_offset: i64,
    /// Byte position of the batch in that segment's `.log` file.
    pub position: u64,
    /// Whether this append rolled a new segment.
    pub rolled: bool,
}

/// The log of one partition. Not internally synchronised: the owner serialises `&mut`
/// calls (appends, retention) and may read through `&self` meanwhile.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    syncer: Syncer,
    /// Read-only, fsync'd segments, oldest first.
    sealed: VecDeque<Segment>,
    /// The segment appends go to (the newest).
    active: Segment,
    size_bytes: u64,
    /// Set by a failure after which appends and fsyncs are refused.
    failed: Option<&'static str>,
}

impl fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("start", &self.log_start_offset())
            .field("end", &self.end_offset())
            .field("segments", &(self.sealed.len() + 1))
            .field("size_bytes", &self.size_bytes)
            .finish()
    }
}

impl PartitionLog {
    /// Opens the log in `dir` (creating the directory and a first segment if needed) and
    /// recovers it: see the [module docs](self) for what is checked and cut.
    pub fn open(dir: &Path, config: LogConfig) -> Result<(PartitionLog, RecoveryReport), LogError> {
        Self::open_with(dir, config, Syncer::os())
    }

    /// [`Self::open`] with every fsync going through `syncer`.
    pub fn open_with(
        dir: &Path,
        config: LogConfig,
        syncer: Syncer,
    ) -> Result<(PartitionLog, RecoveryReport), LogError> {
        let config = LogConfig { segment_bytes: config.segment_bytes.min(MAX_SEGMENT_BYTES), ..config };
        std::fs::create_dir_all(dir).map_err(LogError::io("create partition directory", dir))?;
        let bases = recovery::list_segments(dir)?;
        let mut report = RecoveryReport::default();
        let mut segments: VecDeque<Segment> = VecDeque::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            if let Some(prev) = segments.back() {
                if base != prev.next_offset() {
                    return Err(LogError::OffsetMismatch {
                        path: segment::segment_path(dir, base, segment::LOG_SUFFIX),
                        position: 0,
                        expected: prev.next_offset(),
                        found: base,
                    });
                }
            }
            let newest = i + 1 == bases.len();
            segments.push_back(recover_segment(dir, base, &config, newest, &mut report)?);
        }
        let active = match segments.pop_back() {
            Some(s) => s,
            None => {
                let s = Segment::create(dir, 0, config.index_interval_bytes)?;
                sync_dir(&syncer, dir)?;
                s
            }
        };
        report.segments = segments.len() + 1;
        let size_bytes = segments.iter().map(Segment::size).sum::<u64>() + active.size();
        let log =
            PartitionLog { dir: dir.to_path_buf(), config, syncer, sealed: segments, active, size_bytes, failed: None };
        tracing::debug!(dir = %dir.display(), start = log.log_start_offset(), end = log.end_offset(),
            segments = report.segments, truncated = report.truncated_bytes, "partition log opened");
        Ok((log, report))
    }

    /// Appends one batch the caller has validated ([`crate::protocol::batch::check_batch`])
    /// and whose header is `header`. Assigns it `base_offset = end_offset()`, writes it
    /// with that offset stamped in (the caller's bytes are not modified), rolling to a new
    /// segment first if needed. On return the batch is in the page cache, not fsync'd.
    pub fn append(&mut self, batch: &[u8], header: &BatchHeader) -> Result<AppendInfo, LogError> {
        self.check_writable()?;
        let invalid = |reason| Err(LogError::InvalidBatch { len: batch.len(), reason });
        if batch.len() < BATCH_HEADER_LEN || batch.len() != header.total_len() {
            return invalid("length differs from the header's batch_length + 12");
        }
        if batch.len() as u64 > MAX_SEGMENT_BYTES {
            return invalid("larger than the largest segment");
        }
        let base_offset = self.end_offset();
        let rolled = self.roll_if_needed(base_offset, batch.len() as u64)?;
        match self.active.append(batch, header, base_offset) {
            Ok(position) => {
                self.size_bytes += batch.len() as u64;
                Ok(AppendInfo {
                    base_offset,
                    last_offset: header.last_offset_delta as i64 + base_offset,
                    segment_base_offset: self.active.base_offset(),
                    position,
                    rolled,
                })
            }
            Err(source) => {
                let path = self.active.log_path().to_path_buf();
                if let Err(e) = self.active.rollback() {
                    tracing::error!(path = %path.display(), error = %e,
                        "cannot cut a failed append off the segment; the log refuses appends until reopened");
                    self.failed = Some("a failed append that could not be rolled back");
                }
                Err(LogError::Io { op: "append", path, source })
            }
        }
    }

    /// Seals the active segment and starts a new one at `base_offset` when a batch of
    /// `len` bytes would overflow the active segment's size or relative offsets.
    fn roll_if_needed(&mut self, base_offset: i64, len: u64) -> Result<bool, LogError> {
        let active = &self.active;
        let full = active.size() > 0 && active.size() + len > self.config.segment_bytes;
        let rel_overflow = base_offset - active.base_offset() > i64::from(u32::MAX);
        if !full && !rel_overflow {
            return Ok(false);
        }
        self.fail_on_error(|log| log.active.seal(&log.syncer), "a failed fsync")?;
        let next = Segment::create(&self.dir, base_offset, self.config.index_interval_bytes)?;
        let old = std::mem::replace(&mut self.active, next);
        tracing::debug!(dir = %self.dir.display(), closed = old.base_offset(), new = base_offset, "rolled segment");
        self.sealed.push_back(old);
        self.fail_on_error(|log| sync_dir(&log.syncer, &log.dir), "a failed directory fsync")?;
        Ok(true)
    }

    fn check_writable(&self) -> Result<(), LogError> {
        match self.failed {
            None => Ok(()),
            Some(cause) => Err(LogError::Unwritable { path: self.active.log_path().to_path_buf(), cause }),
        }
    }

    /// Runs `op`; when it fails, refuses further writes with `cause`.
    fn fail_on_error(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<(), LogError>,
        cause: &'static str,
    ) -> Result<(), LogError> {
        let res = op(self);
        if let Err(e) = &res {
            tracing::error!(dir = %self.dir.display(), error = %e, "the log refuses writes until reopened");
            self.failed = Some(cause);
        }
        res
    }

    /// The first offset still stored.
    pub fn log_start_offset(&self) -> i64 {
        self.sealed.front().unwrap_or(&self.active).base_offset()
    }

    /// The offset the next appended record gets.
    pub fn end_offset(&self) -> i64 {
        self.active.next_offset()
    }

    /// Bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whole batches, as stored, starting with the one that contains `offset`: as many as
    /// fit in `max_bytes`, but always at least that one. Stops at the end of a segment
    /// (fetch again from the next offset to continue). Empty when `offset` is the end
    /// offset; [`LogError::OffsetOutOfRange`] outside `[log_start_offset, end_offset]`.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        let (start, end) = (self.log_start_offset(), self.end_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { requested: offset, start, end });
        }
        if offset == end {
            return Ok(Bytes::new());
        }
        self.segment_for(offset).read(offset, max_bytes)
    }

    /// The segment holding `offset`, which is in `[log_start_offset, end_offset)`.
    fn segment_for(&self, offset: i64) -> &Segment {
        if offset >= self.active.base_offset() {
            return &self.active;
        }
        // Segments are contiguous and offset >= the first base: at least one is <= offset.
        let after = self.sealed.partition_point(|s| s.base_offset() <= offset);
        &self.sealed[after.saturating_sub(1)]
    }

    /// Whether an earlier failure makes the log refuse appends and fsyncs
    /// ([`LogError::Unwritable`]).
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// The settings the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The first step out of a failure ([`Self::is_failed`]): cuts the active segment
    /// back to `durable_end` (known fsync'd; or to the segment's start when that is later,
    /// since a roll fsyncs what it seals) and fsyncs the cut and the directory. The bytes
    /// after that point are in doubt: a failed fsync may have left them only in the page
    /// cache, where a later fsync would not write them again. Returns the offset cut to;
    /// the log stays failed: reopen it ([`Self::open`]) to use it again. Fails, changing
    /// nothing else, when the cut cannot be made durable (e.g. the disk is still full).
    pub fn cut_to_durable(&mut self, durable_end: i64) -> Result<i64, LogError> {
        let cut = durable_end.clamp(self.active.base_offset(), self.end_offset());
        let pos = self.active.position_of(cut)?;
        let path = self.active.log_path().to_path_buf();
        let file = self.active.log_file();
        file.set_len(pos).map_err(LogError::io("truncate segment", &path))?;
        self.syncer.sync(file, &path, SyncKind::All).map_err(LogError::io("fsync truncated segment", &path))?;
        sync_dir(&self.syncer, &self.dir)?;
        Ok(cut)
    }

    /// Marks the log failed after an fsync done outside it (via [`PartitionLog::sync_target`])
    /// failed: appends and flushes are refused until the log is reopened, reads still work.
    pub fn mark_failed(&mut self, cause: &'static str) {
        self.failed.get_or_insert(cause);
    }

    /// The active segment's file and the end offset it covers: once `file.sync_data()`
    /// returns, every offset below that end offset is durable (a roll fsyncs the segment
    /// it closes). Lets the owner fsync outside its lock, e.g. in `spawn_blocking`.
    ///
    /// If that fsync fails, do not retry it and report success: the kernel may have
    /// dropped the dirty pages. Treat the partition as failed and reopen it.
    pub fn sync_target(&self) -> (Arc<File>, i64) {
        (Arc::clone(self.active.log_file()), self.end_offset())
    }

    /// fsyncs the active segment now, making every offset below [`Self::end_offset`]
    /// durable. After a failed fsync the log refuses appends and flushes
    /// ([`LogError::Unwritable`]) until reopened.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.check_writable()?;
        self.fail_on_error(|log| log.active.sync(&log.syncer), "a failed fsync")
    }

    /// Deletes whole segments from the oldest, never the active one: first those whose
    /// largest batch `max_timestamp` is older than `now_ms - retention`, then more while
    /// the partition exceeds `retention_bytes`. Returns how many were deleted; the log
    /// start offset moves to the first remaining segment. Deletions are not fsync'd to
    /// the directory: after a crash a deleted segment may reappear, and the next pass
    /// deletes it again.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let mut deleted = 0;
        if let Some(retention) = self.config.retention {
            let cutoff = now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
            while self.sealed.front().and_then(Segment::max_timestamp).is_some_and(|t| t < cutoff) {
                self.delete_oldest()?;
                deleted += 1;
            }
        }
        if let Some(limit) = self.config.retention_bytes {
            while !self.sealed.is_empty() && self.size_bytes > limit {
                self.delete_oldest()?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    fn delete_oldest(&mut self) -> Result<(), LogError> {
        let Some(oldest) = self.sealed.front() else {
            return Ok(());
        };
        oldest.delete_files()?;
        if let Some(oldest) = self.sealed.pop_front() {
            self.size_bytes -= oldest.size();
            tracing::info!(path = %oldest.log_path().display(), bytes = oldest.size(),
                next = oldest.next_offset(), "retention deleted segment");
        }
        Ok(())
    }

    /// Calls `f` with the header of every stored batch (its `base_offset` is the assigned
    /// one), oldest first. Reads headers only; for rebuilding producer state at startup.
    pub fn for_each_header(&self, mut f: impl FnMut(&BatchHeader)) -> Result<(), LogError> {
        for seg in self.sealed.iter().chain(std::iter::once(&self.active)) {
            let path = seg.log_path();
            let end = scan_segment(seg.log_file(), seg.size(), seg.base_offset(), Verify::Headers, |_, h| f(h))
                .map_err(LogError::io("scan segment", path))?;
            if let Some(stop) = end.stop {
                return Err(stop_to_error(path, stop));
            }
        }
        Ok(())
    }
}
