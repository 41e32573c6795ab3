//! Opening a partition directory: finding the segments, checking them, cutting a torn
//! tail, rebuilding indexes, and fsyncing what is kept.
//!
//! A sealed segment is known fsync'd when the segment after it starts at or below the
//! recovery point (see [`super::sync`]): such segments have their headers checked
//! (structure, contiguity) and any fault there is an error, since those bytes may have
//! been acknowledged as durable and nothing is cut from them automatically. Every other
//! segment — the newest always, and sealed segments a crash may have caught before their
//! fsync — is scanned in full (structure, CRC, offset contiguity). The first invalid batch
//! there ends the log: the segment is truncated before it and the segments after it are
//! removed (the durable point never passed an unsynced segment, so nothing acknowledged
//! as durable is lost). Then every such segment is fsync'd, with the directory: a process
//! crash leaves unwritten data in the page cache, where the scan finds it intact, and the
//! log is about to declare it durable.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::path::Path;

use super::index::{OffsetIndex, Reconciled};
use super::scan::{scan_segment, Problem, ScanStop, Start, Verify};
use super::segment::{parse_log_name, remove_segment_files, segment_path, Segment, INDEX_SUFFIX, LOG_SUFFIX};
use super::{LogConfig, LogError, RecoveryReport};
use crate::broker::disk::{SyncKind, Syncer};

/// Files of the partition directory that are not segments but belong there: the
/// recovery point, the producer-state snapshot and (in a cluster) the leader-epoch history,
/// and their temporary files.
const STATE_FILES: &[&str] = &[
    "recovery-point",
    "recovery-point.tmp",
    "producer-state",
    "producer-state.tmp",
    "leader-epochs",
    "leader-epochs.tmp",
];

/// Base offsets of the segments in `dir`, ascending. Files that are not ours are left
/// alone and logged.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut bases = Vec::new();
    let entries = fs::read_dir(dir).map_err(LogError::io("list partition directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(LogError::io("list partition directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(dir = %dir.display(), name = ?name, "ignoring file with a non-UTF-8 name");
            continue;
        };
        if let Some(base) = parse_log_name(name) {
            bases.push(base);
        } else if !name.ends_with(INDEX_SUFFIX) && !STATE_FILES.contains(&name) {
            // Index files are checked with their segment; an orphan one is harmless.
            tracing::warn!(dir = %dir.display(), name, "ignoring file that is not a segment");
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Opens and checks every segment of `dir` (see the module docs), oldest first. The
/// returned segments are contiguous; the last one keeps its index writer open (it becomes
/// the active segment).
pub(super) fn recover_segments(
    dir: &Path,
    config: &LogConfig,
    recovery_point: i64,
    syncer: &Syncer,
    report: &mut RecoveryReport,
) -> Result<VecDeque<Segment>, LogError> {
    let bases = list_segments(dir)?;
    let mut segments: VecDeque<Segment> = VecDeque::with_capacity(bases.len());
    // Index in `segments` of the first segment not known fsync'd.
    let mut first_unsynced: Option<usize> = None;
    let mut removed_from: Option<usize> = None;
    for (i, &base) in bases.iter().enumerate() {
        let trusted = bases.get(i + 1).is_some_and(|&next| next <= recovery_point);
        if let Some(prev) = segments.back() {
            if base != prev.next_offset() {
                let mismatch = LogError::OffsetMismatch {
                    path: segment_path(dir, base, LOG_SUFFIX),
                    position: 0,
                    expected: prev.next_offset(),
                    found: base,
                };
                if first_unsynced.is_none() {
                    return Err(mismatch);
                }
                // The segment before was not known fsync'd: its lost tail explains the gap.
                report.reason = Some(format!("{mismatch}; removed the segments from here"));
                removed_from = Some(i);
                break;
            }
        }
        let (segment, cut) = recover_segment(dir, base, config, trusted, report)?;
        if !trusted && first_unsynced.is_none() {
            first_unsynced = Some(segments.len());
        }
        segments.push_back(segment);
        if cut && i + 1 < bases.len() {
            removed_from = Some(i + 1);
            break;
        }
    }
    if let Some(from) = removed_from {
        // Newest first, so that an interrupted removal leaves a contiguous log.
        for &base in bases[from..].iter().rev() {
            remove_segment_files(dir, base)?;
        }
        report.segments_removed += bases.len() - from;
        tracing::warn!(dir = %dir.display(), removed = bases.len() - from,
            "removed segments that followed a torn tail or a gap in segments not known fsync'd");
    }
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter_mut().enumerate() {
        if i != last {
            seg.close_index();
        }
        if first_unsynced.is_some_and(|f| i >= f) {
            let path = seg.log_path().to_path_buf();
            syncer
                .sync(seg.log_file(), &path, SyncKind::Data)
                .map_err(LogError::io("fsync recovered segment", &path))?;
            report.segments_synced += 1;
        }
    }
    if !segments.is_empty() {
        sync_dir(syncer, dir)?;
    }
    Ok(segments)
}

/// Opens segment `base_offset` and checks it: by headers when `trusted` (failing on any
/// fault), fully otherwise (truncating at the first invalid batch and recording it in
/// `report`). Returns the segment, with an open index writer unless trusted, and whether
/// it was cut.
fn recover_segment(
    dir: &Path,
    base_offset: i64,
    config: &LogConfig,
    trusted: bool,
    report: &mut RecoveryReport,
) -> Result<(Segment, bool), LogError> {
    let path = segment_path(dir, base_offset, LOG_SUFFIX);
    let mut options = OpenOptions::new();
    options.read(true);
    if !trusted {
        options.append(true);
    }
    let file = options.open(&path).map_err(LogError::io("open segment", &path))?;
    let len = file.metadata().map_err(LogError::io("stat segment", &path))?.len();
    let verify = if trusted { Verify::Headers } else { Verify::Crc };
    let mut index = OffsetIndex::new(config.index_interval_bytes);
    let mut max_timestamp: Option<i64> = None;
    let scan = scan_segment(&file, len, Start::segment(base_offset), verify, |pos, h| {
        // scan_segment stops before a batch whose position or relative offset overflows.
        let rel = u32::try_from(h.base_offset - base_offset).unwrap_or(u32::MAX);
        let pos32 = u32::try_from(pos).unwrap_or(u32::MAX);
        index.observe(rel, pos32, h.total_len() as u64);
        max_timestamp = Some(max_timestamp.map_or(h.max_timestamp, |m| m.max(h.max_timestamp)));
    })
    .map_err(LogError::io("scan segment", &path))?;
    report.batches += scan.batches;
    let cut = scan.stop.is_some();
    if let Some(stop) = scan.stop {
        if trusted {
            return Err(stop_to_error(&path, stop));
        }
        let cut = len - scan.valid_len;
        let reason = format!(
            "{} at position {} of {} (next offset {}); cut {cut} bytes",
            stop.problem,
            stop.position,
            path.display(),
            scan.next_offset
        );
        tracing::warn!(path = %path.display(), position = stop.position, cut_bytes = cut,
            problem = %stop.problem, "truncating a torn tail");
        file.set_len(scan.valid_len).map_err(LogError::io("truncate segment", &path))?;
        report.truncated_bytes += cut;
        report.reason = Some(reason);
    }
    let (segment, reconciled) =
        Segment::recovered(dir, base_offset, scan.next_offset, scan.valid_len, max_timestamp, file, index, !trusted)?;
    if reconciled != Reconciled::Unchanged {
        tracing::info!(path = %path.display(), ?reconciled, "rebuilt segment index from the log");
        report.indexes_rebuilt += 1;
    }
    Ok((segment, cut))
}

pub(super) fn stop_to_error(path: &Path, stop: ScanStop) -> LogError {
    match stop.problem {
        Problem::Decode(source) => LogError::Corrupt { path: path.to_path_buf(), position: stop.position, source },
        Problem::OffsetMismatch { expected, found } => {
            LogError::OffsetMismatch { path: path.to_path_buf(), position: stop.position, expected, found }
        }
    }
}

/// fsyncs a directory so that files created in (or removed from) it stay so.
pub(super) fn sync_dir(syncer: &Syncer, dir: &Path) -> Result<(), LogError> {
    syncer.sync_dir(dir).map_err(LogError::io("fsync partition directory", dir))
}
