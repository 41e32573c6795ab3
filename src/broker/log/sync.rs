//! Sync rounds, the durable point and the recovery point: what must be fsync'd, in which
//! order, and what is known durable afterwards; and cutting the log back to the durable
//! point after a failure.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::recovery::sync_dir;
use super::segment::{remove_segment_files, Segment};
use super::{LogError, PartitionLog};
use crate::broker::disk::{write_atomic, SyncKind, Syncer};

/// Name of the file, in the partition directory, that holds the recovery point.
pub(super) const RECOVERY_POINT_FILE: &str = "recovery-point";

/// Where the durable part of the log ends: every offset below `offset` is fsync'd, and
/// in the segment whose base is `segment_base` that is the first `position` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurablePoint {
    offset: i64,
    segment_base: i64,
    position: u64,
}

impl DurablePoint {
    /// The end of `segment` (the active one).
    pub(super) fn end_of(segment: &Segment) -> DurablePoint {
        DurablePoint { offset: segment.next_offset(), segment_base: segment.base_offset(), position: segment.size() }
    }

    /// Offsets below this are durable.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// How many bytes of the segment `[base, next)` of `size` bytes are durable.
    pub(super) fn readable_bytes(&self, base: i64, next: i64, size: u64) -> u64 {
        if next <= self.offset {
            size
        } else if base == self.segment_base {
            self.position.min(size)
        } else {
            0
        }
    }
}

/// One group-commit round, planned under the owner's lock and run outside it: fsync the
/// sealed segments not yet fsync'd (oldest first), the directory if a segment was
/// created, then the active segment; after a roll, also move the recovery point.
#[derive(Debug)]
pub struct SyncPlan {
    syncer: Syncer,
    sealed: Vec<(Arc<File>, PathBuf)>,
    dir: PathBuf,
    sync_dir: bool,
    active: (Arc<File>, PathBuf),
    point: DurablePoint,
    /// Whether this round moves the recovery point (it fsyncs sealed segments).
    move_recovery_point: bool,
}

/// What a successful [`SyncPlan::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    point: DurablePoint,
    dir_synced: bool,
    recovery_point: Option<i64>,
}

impl Synced {
    /// Offsets below this are now durable.
    pub fn end(&self) -> i64 {
        self.point.offset
    }
}

impl SyncPlan {
    /// The offset below which everything is durable once the plan has run.
    pub fn end(&self) -> i64 {
        self.point.offset
    }

    /// Whether the plan fsyncs sealed segments (a roll happened since the last round).
    pub fn includes_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    /// Runs the fsyncs, in order, stopping at the first failure. After a failure do not
    /// retry and do not trust a later success: the kernel may have dropped the dirty
    /// pages. Mark the log failed instead ([`PartitionLog::mark_failed`]).
    pub fn run(&self) -> Result<Synced, LogError> {
        for (file, path) in &self.sealed {
            self.syncer.sync(file, path, SyncKind::Data).map_err(LogError::io("fsync sealed segment", path))?;
        }
        if self.sync_dir {
            sync_dir(&self.syncer, &self.dir)?;
        }
        let (file, path) = &self.active;
        self.syncer.sync(file, path, SyncKind::Data).map_err(LogError::io("fsync segment", path))?;
        let mut recovery_point = None;
        if self.move_recovery_point {
            match write_recovery_point(&self.dir, self.point.offset, &self.syncer) {
                Ok(()) => recovery_point = Some(self.point.offset),
                // The data is durable; a stale recovery point only makes the next open
                // check more.
                Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "cannot move the recovery point"),
            }
        }
        Ok(Synced { point: self.point, dir_synced: self.sync_dir, recovery_point })
    }
}

impl PartitionLog {
    /// Offsets below this are fsync'd.
    pub fn durable_offset(&self) -> i64 {
        self.durable.offset
    }

    /// The next sync round, or `None` when everything is durable already (or the log is
    /// failed: nothing it holds past the durable point can be made durable any more).
    pub fn sync_plan(&mut self) -> Option<SyncPlan> {
        if self.failed.is_some() {
            return None;
        }
        let durable = self.durable.offset;
        let sealed: Vec<_> = self
            .sealed
            .iter()
            .filter(|s| s.next_offset() > durable)
            .map(|s| (Arc::clone(s.log_file()), s.log_path().to_path_buf()))
            .collect();
        let sync_dir = self.active.base_offset() > self.dir_synced_base;
        let point = DurablePoint::end_of(&self.active);
        if point.offset == durable && sealed.is_empty() && !sync_dir {
            return None;
        }
        self.active.flush_index();
        Some(SyncPlan {
            syncer: self.syncer.clone(),
            move_recovery_point: !sealed.is_empty(),
            sealed,
            dir: self.dir.clone(),
            sync_dir,
            active: (Arc::clone(self.active.log_file()), self.active.log_path().to_path_buf()),
            point,
        })
    }

    /// Records that a plan ran successfully: its end is durable.
    pub fn synced(&mut self, done: &Synced) {
        if done.point.offset >= self.durable.offset {
            self.durable = done.point;
        }
        if done.dir_synced {
            self.dir_synced_base = self.dir_synced_base.max(done.point.segment_base);
        }
        if let Some(rp) = done.recovery_point {
            self.recovery_point = rp;
        }
    }

    /// fsyncs everything now (one sync round in place), making every offset below
    /// [`Self::end_offset`] durable. After a failed fsync the log refuses appends and
    /// flushes ([`LogError::Unwritable`]) until cut back and reopened.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.check_writable()?;
        if let Some(plan) = self.sync_plan() {
            match plan.run() {
                Ok(done) => self.synced(&done),
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "the log refuses writes until reopened");
                    self.failed = Some("a failed fsync");
                    return Err(e);
                }
            }
        }
        // A flush (shutdown, tests) leaves the recovery point at the end, so the next open
        // trusts every sealed segment.
        if self.recovery_point != self.durable.offset {
            match write_recovery_point(&self.dir, self.durable.offset, &self.syncer) {
                Ok(()) => self.recovery_point = self.durable.offset,
                Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "cannot move the recovery point"),
            }
        }
        Ok(())
    }

    /// The first step out of a failure ([`Self::is_failed`]): cuts the log back to the
    /// durable point — the segments after the one holding it are removed, that one is
    /// truncated there — and fsyncs the cut and the directory. What followed is in doubt:
    /// a failed fsync may have left it only in the page cache, where a later fsync would
    /// not write it again. Returns the offset cut to; the log stays failed: reopen it
    /// ([`Self::open`]) to use it again. Fails when the cut cannot be made durable (e.g.
    /// the disk is still full); a partial cut is finished by the next attempt or the next
    /// open (which re-checks what is not known durable).
    pub fn cut_to_durable(&mut self) -> Result<i64, LogError> {
        self.cut_to(self.durable.offset)
    }

    /// Cuts the log at `offset` (a batch boundary; clamped to `[log start, end]`) the way
    /// [`Self::cut_to_durable`] does: later segments removed, the one holding `offset`
    /// truncated there, the cut and the directory fsync'd. A replica uses it to drop a tail
    /// its new leader does not have (KIP-101). Reopen the log afterwards.
    pub fn cut_to(&mut self, offset: i64) -> Result<i64, LogError> {
        let cut = offset.clamp(self.log_start_offset(), self.end_offset());
        let segments: Vec<&Segment> = self.sealed.iter().chain(std::iter::once(&self.active)).collect();
        let keep = segments.iter().rposition(|s| s.base_offset() <= cut).unwrap_or(0);
        // Newest first, so that an interrupted cut leaves a contiguous log.
        for seg in segments[keep + 1..].iter().rev() {
            remove_segment_files(&self.dir, seg.base_offset())?;
        }
        let seg = segments[keep];
        let pos = match self.cut_at {
            Some((offset, pos)) if offset == cut => pos,
            _ => seg.position_of(cut)?,
        };
        let path = seg.log_path().to_path_buf();
        let file = seg.log_file();
        self.cut_at = Some((cut, pos));
        file.set_len(pos).map_err(LogError::io("truncate segment", &path))?;
        self.syncer.sync(file, &path, SyncKind::All).map_err(LogError::io("fsync truncated segment", &path))?;
        sync_dir(&self.syncer, &self.dir)?;
        Ok(cut)
    }

    /// The recovery point last written (every offset below it is fsync'd).
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }
}

/// Replaces the recovery point file of the partition in `dir` with `offset`.
pub(super) fn write_recovery_point(dir: &Path, offset: i64, syncer: &Syncer) -> Result<(), LogError> {
    let path = dir.join(RECOVERY_POINT_FILE);
    write_atomic(&path, format!("{offset}\n").as_bytes(), 0o644, syncer)
        .map_err(LogError::io("write recovery point", &path))
}

/// The recovery point stored in `dir`: 0 (trust no sealed segment) when the file is
/// missing or unreadable.
pub(super) fn read_recovery_point(dir: &Path) -> i64 {
    let path = dir.join(RECOVERY_POINT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<i64>().unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable recovery point; checking every segment");
            0
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable recovery point; checking every segment");
            0
        }
    }
}
