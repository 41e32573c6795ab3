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
//! [`PartitionLog::append`] writes into the page cache (one `writev`, no fsync), and a
//! segment roll only closes the full segment and creates the next one: neither fsyncs.
//! Durability comes from a *sync round*: [`PartitionLog::sync_plan`] lists what must be
//! fsync'd — the sealed segments not fsync'd yet (oldest first), the directory when a
//! segment was created, then the active segment — the owner runs the plan outside its
//! lock ([`SyncPlan::run`]) and reports success with [`PartitionLog::synced`], which
//! moves the *durable point* ([`PartitionLog::durable_offset`]). Because a plan always
//! covers every unsynced sealed segment before the active one, the durable point never
//! passes a sealed segment that is not fsync'd. [`PartitionLog::flush`] does a round in
//! place. After a failed fsync the log refuses writes until it is cut back to the durable
//! point ([`PartitionLog::cut_to_durable`]) and reopened.
//!
//! A round that fsyncs sealed segments also replaces the `recovery-point` file (with
//! [`write_atomic`](crate::broker::disk::write_atomic)): every offset below the number it
//! holds is fsync'd.
//!
//! # Recovery
//!
//! [`PartitionLog::open`] trusts a sealed segment when the next segment starts at or
//! below the recovery point (it was fsync'd): those get every header checked (structure
//! and contiguity, not the CRC) and a fault there fails the open with
//! [`LogError::Corrupt`] or [`LogError::OffsetMismatch`] instead of dropping data that
//! was acknowledged. Every other segment — always the newest — is scanned in full
//! (structure, CRC, offset contiguity), and the first invalid batch (or a segment that
//! does not follow) ends the log there: that segment is cut and the segments after it are
//! removed. What recovery keeps is then fsync'd, so that what it declares durable is
//! (a crash keeps the page cache but not what was never written back), and the recovery
//! point moves to the end. Opening therefore reads every header of the partition once.
//!
//! # Reads
//!
//! [`PartitionLog::read_plan`] finds, under the owner's lock, where a read starts and how
//! far it may go (up to the end, or only up to the durable point); [`ReadPlan::read`]
//! then reads the file outside the lock. A read returns whole batches from a single
//! segment: one that reaches the end of a segment stops there and the caller fetches
//! again from the next offset. Every batch returned has its CRC checked again: one
//! damaged on disk since it was written is never served; a read that starts at it fails
//! with [`LogError::Corrupt`].

mod index;
mod read;
mod recovery;
mod scan;
mod segment;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::broker::disk::Syncer;
use crate::protocol::batch::{BatchHeader, BATCH_HEADER_LEN};
use crate::protocol::DecodeError;
pub use read::{ReadBound, ReadPlan};
use recovery::{stop_to_error, sync_dir};
use scan::{scan_segment, Verify};
use segment::Segment;
pub use sync::{DurablePoint, SyncPlan};

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
    pub(crate) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LogError + 'a {
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
    /// Bytes cut from the segment where the log ends (a torn or damaged tail).
    pub truncated_bytes: u64,
    /// Segments removed because they followed a cut or a gap in segments that were not
    /// known to be fsync'd.
    pub segments_removed: usize,
    /// Why the tail was cut (problem, position, file and next offset), when it was.
    pub reason: Option<String>,
    /// Index files rewritten because they were missing or did not match the log.
    pub indexes_rebuilt: usize,
    /// Segments scanned with CRCs and fsync'd because they were not known to be fsync'd.
    pub segments_synced: usize,
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
/// calls (appends, retention, sync bookkeeping) and may read through `&self` meanwhile.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    syncer: Syncer,
    /// Read-only segments, oldest first; those that end after the durable point are not
    /// fsync'd yet.
    sealed: VecDeque<Segment>,
    /// The segment appends go to (the newest).
    active: Segment,
    size_bytes: u64,
    /// Set by a failure after which appends and fsyncs are refused.
    failed: Option<&'static str>,
    /// Everything below this point is fsync'd.
    durable: DurablePoint,
    /// Base offset of the newest segment whose directory entry is fsync'd.
    dir_synced_base: i64,
    /// The value in the `recovery-point` file.
    recovery_point: i64,
    /// A cut to the durable point that truncated its segment (offset, file position) but
    /// did not complete: a retry truncates to the same position without looking the
    /// offset up in the already-truncated file.
    cut_at: Option<(i64, u64)>,
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
        let recovery_point = sync::read_recovery_point(dir);
        let mut report = RecoveryReport::default();
        let mut segments = recovery::recover_segments(dir, &config, recovery_point, &syncer, &mut report)?;
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
        let durable = DurablePoint::end_of(&active);
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            syncer,
            sealed: segments,
            dir_synced_base: active.base_offset(),
            active,
            size_bytes,
            failed: None,
            durable,
            recovery_point,
            cut_at: None,
        };
        // Everything is fsync'd now: move the recovery point to the end. It must not stay
        // above the end (after a cut), or segments written later would be trusted unsynced.
        let end = log.end_offset();
        if end != recovery_point {
            match sync::write_recovery_point(&log.dir, end, &log.syncer) {
                Ok(()) => log.recovery_point = end,
                Err(e) if recovery_point <= end => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot update the recovery point; the next open checks more")
                }
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(dir = %dir.display(), start = log.log_start_offset(), end,
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
    /// `len` bytes would overflow the active segment's size or relative offsets. Nothing
    /// is fsync'd here: the next sync round fsyncs the sealed segment and the directory.
    fn roll_if_needed(&mut self, base_offset: i64, len: u64) -> Result<bool, LogError> {
        let active = &self.active;
        let full = active.size() > 0 && active.size() + len > self.config.segment_bytes;
        let rel_overflow = base_offset - active.base_offset() > i64::from(u32::MAX);
        if !full && !rel_overflow {
            return Ok(false);
        }
        let next = Segment::create(&self.dir, base_offset, self.config.index_interval_bytes)?;
        let mut old = std::mem::replace(&mut self.active, next);
        old.close_index();
        tracing::debug!(dir = %self.dir.display(), closed = old.base_offset(), new = base_offset, "rolled segment");
        self.sealed.push_back(old);
        Ok(true)
    }

    fn check_writable(&self) -> Result<(), LogError> {
        match self.failed {
            None => Ok(()),
            Some(cause) => Err(LogError::Unwritable { path: self.active.log_path().to_path_buf(), cause }),
        }
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
    /// Reads up to the end, durable or not; see [`Self::read_plan`] to read outside a lock
    /// or only what is durable.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        match self.read_plan(offset, max_bytes, ReadBound::End)? {
            Some(plan) => plan.read(),
            None => Ok(Bytes::new()),
        }
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

    /// Marks the log failed after an fsync done outside it (a [`SyncPlan`]) failed:
    /// appends and flushes are refused until the log is cut back and reopened, reads
    /// still work.
    pub fn mark_failed(&mut self, cause: &'static str) {
        self.failed.get_or_insert(cause);
    }

    /// Deletes whole segments from the oldest, never the active one and never one that
    /// is not wholly below the durable point (like Kafka, which deletes only below the
    /// high watermark: a segment whose fsync is pending is still in doubt, and a cut may
    /// need it): first those whose largest batch `max_timestamp` is older than
    /// `now_ms - retention`, then more while the partition exceeds `retention_bytes`.
    /// Returns how many were deleted; the log start offset moves to the first remaining
    /// segment. Deletions are not fsync'd to the directory: after a crash a deleted
    /// segment may reappear, and the next pass deletes it again.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let mut deleted = 0;
        if let Some(retention) = self.config.retention {
            let cutoff = now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
            while self.oldest_deletable().and_then(Segment::max_timestamp).is_some_and(|t| t < cutoff) {
                self.delete_oldest()?;
                deleted += 1;
            }
        }
        if let Some(limit) = self.config.retention_bytes {
            while self.oldest_deletable().is_some() && self.size_bytes > limit {
                self.delete_oldest()?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// The oldest sealed segment, when it is wholly durable (retention may delete it).
    fn oldest_deletable(&self) -> Option<&Segment> {
        self.sealed.front().filter(|s| s.next_offset() <= self.durable.offset())
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
    pub fn for_each_header(&self, f: impl FnMut(&BatchHeader)) -> Result<u64, LogError> {
        self.for_each_header_from(self.log_start_offset(), f)
    }

    /// Like [`Self::for_each_header`], from the batch that starts at `offset` (a batch
    /// boundary, e.g. a segment base or an earlier end offset; [`LogError::OffsetMismatch`]
    /// otherwise). Returns how many headers were visited.
    pub fn for_each_header_from(&self, offset: i64, mut f: impl FnMut(&BatchHeader)) -> Result<u64, LogError> {
        let mut visited = 0;
        for seg in self.sealed.iter().chain(std::iter::once(&self.active)) {
            if seg.next_offset() <= offset {
                continue;
            }
            let (pos, from) =
                if offset <= seg.base_offset() { (0, seg.base_offset()) } else { (seg.position_of(offset)?, offset) };
            let path = seg.log_path();
            let from = scan::Start { position: pos, offset: from, segment_base: seg.base_offset() };
            let end = scan_segment(seg.log_file(), seg.size(), from, Verify::Headers, |_, h| {
                visited += 1;
                f(h)
            })
            .map_err(LogError::io("scan segment", path))?;
            if let Some(stop) = end.stop {
                return Err(stop_to_error(path, stop));
            }
        }
        Ok(visited)
    }
}
