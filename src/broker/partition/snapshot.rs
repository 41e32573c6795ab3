//! The producer-state snapshot: `producer-state` in the partition directory holds the
//! state as of one log offset ([`ProducerStates::encode_snapshot`]), replaced atomically
//! after the fsync that follows a roll, at shutdown and after an open that had to read
//! headers. Opening loads it and replays only the batch headers stored after that offset,
//! so start-up does not rescan the whole partition; dedup still survives a crash (the
//! headers after the snapshot are replayed) and a cut (a snapshot past the end is removed
//! before anything is appended, since its offsets may be reused).

use std::path::Path;
use std::time::Duration;

use crate::broker::disk::{write_atomic, Syncer};
use crate::broker::log::{LogError, PartitionLog};
use crate::broker::metrics::{add, BrokerMetrics};
use crate::broker::producer_state::ProducerStates;

/// Name of the snapshot file in the partition directory.
pub(super) const SNAPSHOT_FILE: &str = "producer-state";

/// How producer state was rebuilt when a partition opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateReport {
    /// The offset of the snapshot that was used, if one was.
    pub snapshot_offset: Option<i64>,
    /// Batch headers read to rebuild the state (those after the snapshot).
    pub headers_scanned: u64,
    /// Producers with state after the rebuild.
    pub producers: usize,
    /// Why a snapshot on disk was not used, when one was not.
    pub snapshot_ignored: Option<String>,
}

/// Rebuilds the producer state of `log` at `now_ms`: from the snapshot when it is usable,
/// plus the headers after it; else from every header. Producers idle longer than
/// `expiration` (by the snapshot's record) are dropped. A snapshot past the log end is
/// removed (durably) first.
pub(super) fn load(
    log: &PartitionLog,
    now_ms: i64,
    expiration: Duration,
    syncer: &Syncer,
    metrics: &BrokerMetrics,
) -> Result<(ProducerStates, ProducerStateReport), LogError> {
    let path = log.dir().join(SNAPSHOT_FILE);
    let mut report = ProducerStateReport::default();
    let snapshot = match std::fs::read(&path) {
        Ok(bytes) => match ProducerStates::decode_snapshot(&bytes) {
            Ok((offset, _)) if offset > log.end_offset() => {
                // Taken before a cut: its offsets may be reused. Remove it for good.
                std::fs::remove_file(&path).map_err(LogError::io("remove stale producer snapshot", &path))?;
                syncer.sync_dir(log.dir()).map_err(LogError::io("fsync partition directory", log.dir()))?;
                report.snapshot_ignored =
                    Some(format!("taken at offset {offset}, past the log end {}", log.end_offset()));
                None
            }
            Ok(s) => Some(s),
            Err(e) => {
                report.snapshot_ignored = Some(e);
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            report.snapshot_ignored = Some(e.to_string());
            None
        }
    };
    if let Some(reason) = &report.snapshot_ignored {
        tracing::warn!(path = %path.display(), reason, "not using the producer-state snapshot; reading every batch header");
    }
    let (mut states, from) = match snapshot {
        Some((offset, mut states)) => {
            let expired = states.expire(now_ms.saturating_sub(expiration.as_millis() as i64));
            add(&metrics.producers_expired, expired as u64);
            report.snapshot_offset = Some(offset);
            (states, offset.max(log.log_start_offset()))
        }
        None => (ProducerStates::default(), log.log_start_offset()),
    };
    let scanned = match log.for_each_header_from(from, |h| states.record_rebuilt(h, now_ms)) {
        Ok(n) => n,
        Err(e) if report.snapshot_offset.is_some() => {
            // The snapshot's offset is not a batch boundary of this log: start over.
            tracing::warn!(path = %path.display(), error = %e, "producer-state snapshot does not fit the log; reading every batch header");
            report.snapshot_offset = None;
            report.snapshot_ignored = Some(e.to_string());
            states = ProducerStates::default();
            log.for_each_header(|h| states.record_rebuilt(h, now_ms))?
        }
        Err(e) => return Err(e),
    };
    report.headers_scanned = scanned;
    report.producers = states.len();
    Ok((states, report))
}

/// Replaces the snapshot in `dir` with `states` as of `offset`. A failure is logged, not
/// returned: the snapshot only saves work at the next open.
pub(super) fn write(dir: &Path, offset: i64, states: &ProducerStates, syncer: &Syncer) {
    let path = dir.join(SNAPSHOT_FILE);
    if let Err(e) = write_atomic(&path, &states.encode_snapshot(offset), 0o644, syncer) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the producer-state snapshot");
    }
}
