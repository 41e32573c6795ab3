//! Opening a partition directory: finding the segments, checking them, cutting a torn
//! tail off the newest one and rebuilding indexes.
//!
//! Only the newest segment can hold unsynced bytes: a roll fsyncs the segment it closes
//! before the next one is created. So the newest segment is scanned in full (structure,
//! CRC, offset contiguity) and truncated at its first invalid batch, while older segments
//! have their headers checked (structure, contiguity) and any fault there is an error:
//! those bytes were acknowledged as durable, so nothing is cut from them automatically.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use super::index::{OffsetIndex, Reconciled};
use super::scan::{scan_segment, Problem, ScanStop, Verify};
use super::segment::{parse_log_name, segment_path, Segment, INDEX_SUFFIX, LOG_SUFFIX};
use super::{LogConfig, LogError, RecoveryReport};
use crate::broker::disk::Syncer;

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
        } else if !name.ends_with(INDEX_SUFFIX) {
            // Index files are checked with their segment; an orphan one is harmless.
            tracing::warn!(dir = %dir.display(), name, "ignoring file that is not a segment");
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Opens segment `base_offset` and checks it: fully when `newest` (truncating a bad tail
/// and recording it in `report`), by headers otherwise (failing on any fault).
pub(super) fn recover_segment(
    dir: &Path,
    base_offset: i64,
    config: &LogConfig,
    newest: bool,
    report: &mut RecoveryReport,
) -> Result<Segment, LogError> {
    let path = segment_path(dir, base_offset, LOG_SUFFIX);
    let mut options = OpenOptions::new();
    options.read(true);
    if newest {
        options.append(true);
    }
    let file = options.open(&path).map_err(LogError::io("open segment", &path))?;
    let len = file.metadata().map_err(LogError::io("stat segment", &path))?.len();
    let verify = if newest { Verify::Crc } else { Verify::Headers };
    let mut index = OffsetIndex::new(config.index_interval_bytes);
    let mut max_timestamp: Option<i64> = None;
    let scan = scan_segment(&file, len, base_offset, verify, |pos, h| {
        // scan_segment stops before a batch whose position or relative offset overflows.
        let rel = u32::try_from(h.base_offset - base_offset).unwrap_or(u32::MAX);
        let pos32 = u32::try_from(pos).unwrap_or(u32::MAX);
        index.observe(rel, pos32, h.total_len() as u64);
        max_timestamp = Some(max_timestamp.map_or(h.max_timestamp, |m| m.max(h.max_timestamp)));
    })
    .map_err(LogError::io("scan segment", &path))?;
    report.batches += scan.batches;
    if let Some(stop) = scan.stop {
        if !newest {
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
            problem = %stop.problem, "truncating the torn tail of the newest segment");
        truncate(&file, &path, scan.valid_len)?;
        report.truncated_bytes += cut;
        report.reason = Some(reason);
    }
    let (segment, reconciled) =
        Segment::recovered(dir, base_offset, scan.next_offset, scan.valid_len, max_timestamp, file, index, newest)?;
    if reconciled != Reconciled::Unchanged {
        tracing::info!(path = %path.display(), ?reconciled, "rebuilt segment index from the log");
        report.indexes_rebuilt += 1;
    }
    Ok(segment)
}

/// Cuts `file` to `len` bytes and makes that durable, so a later append cannot leave
/// garbage between batches.
fn truncate(file: &File, path: &Path, len: u64) -> Result<(), LogError> {
    file.set_len(len).map_err(LogError::io("truncate segment", path))?;
    file.sync_all().map_err(LogError::io("fsync truncated segment", path))
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
