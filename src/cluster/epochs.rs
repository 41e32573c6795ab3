//! Leader epochs of a partition log (Kafka's leader-epoch cache, KIP-101 / KIP-279).
//!
//! Each entry says "from `start_offset` on, batches were appended by the leader of
//! `epoch`". The leader adds its epoch at its log end when it takes over; a follower adds
//! an entry when it appends the first batch the leader sent with a newer epoch. The cache
//! answers the two questions of a leader change:
//!
//! - the leader, asked by a follower "where does my latest epoch E end?", answers with the
//!   largest epoch it has that is ≤ E and the offset where that epoch ends in *its* log
//!   ([`EpochCache::end_offset_for`]);
//! - the follower truncates to the smaller of that offset and the end of the same epoch in
//!   its own log, asking again with an older epoch when the leader never had E
//!   ([`follower_truncation`]). Diverged tails never survive.
//!
//! The cache is persisted next to the log ([`EpochFile`]); an entry is written and
//! fsync'd *before* the first batch of its epoch is appended, and entries starting at or
//! past the log end are dropped when the log is opened, so the file can be ahead of the
//! log but never behind it.

use std::path::{Path, PathBuf};

use crate::broker::disk::{write_atomic, Syncer};

/// Epoch value meaning "none" in answers.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Offset value meaning "none" in answers.
pub const UNDEFINED_OFFSET: i64 = -1;

/// One epoch's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// The first offset appended in it.
    pub start_offset: i64,
}

/// A refused change to the cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leader epoch {epoch} at offset {offset} is older than the latest epoch {latest} (epochs only grow)")]
pub struct EpochRegression {
    /// Epoch offered.
    pub epoch: i32,
    /// Its start offset.
    pub offset: i64,
    /// The latest epoch in the cache.
    pub latest: i32,
}

/// The epochs of one log, epochs strictly increasing, start offsets non-decreasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// A cache holding `entries` (must be ordered as described on the type).
    pub fn from_entries(entries: Vec<EpochEntry>) -> Option<EpochCache> {
        let ordered = entries.windows(2).all(|w| w[0].epoch < w[1].epoch && w[0].start_offset <= w[1].start_offset);
        ordered.then_some(EpochCache { entries })
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch, or [`UNDEFINED_EPOCH`].
    pub fn latest_epoch(&self) -> i32 {
        self.latest().map_or(UNDEFINED_EPOCH, |e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether the cache changed
    /// (the same epoch again is a no-op). An entry starting at or after `start_offset` is
    /// replaced (it had no batches below that point). A smaller epoch is refused.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool, EpochRegression> {
        if let Some(last) = self.latest() {
            if epoch == last.epoch {
                return Ok(false);
            }
            if epoch < last.epoch {
                return Err(EpochRegression { epoch, offset: start_offset, latest: last.epoch });
            }
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry { epoch, start_offset });
        Ok(true)
    }

    /// The epoch of the record at `offset` (the last entry starting at or before it).
    pub fn epoch_for(&self, offset: i64) -> Option<i32> {
        self.entries.iter().rev().find(|e| e.start_offset <= offset).map(|e| e.epoch)
    }

    /// KIP-101's question, answered from this log: the largest epoch ≤ `epoch` and the
    /// offset where it ends (the next epoch's start, or `log_end` for the newest).
    /// `(UNDEFINED_EPOCH, first start)` when every epoch here is newer; `(UNDEFINED_EPOCH,
    /// UNDEFINED_OFFSET)` when the cache is empty.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        match self.entries.iter().rposition(|e| e.epoch <= epoch) {
            Some(i) => {
                let end = self.entries.get(i + 1).map_or(log_end, |next| next.start_offset);
                (self.entries[i].epoch, end)
            }
            None => (UNDEFINED_EPOCH, self.entries.first().map_or(UNDEFINED_OFFSET, |e| e.start_offset)),
        }
    }

    /// Drops entries starting at or after `end` (the log was truncated to `end`). Returns
    /// whether anything changed.
    pub fn truncate_from_end(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end);
        before != self.entries.len()
    }

    /// Forgets epochs that ended before `start` (retention removed their batches): the
    /// entry covering `start` is kept, starting at `start`.
    pub fn truncate_from_start(&mut self, start: i64) -> bool {
        let Some(keep) = self.entries.iter().rposition(|e| e.start_offset <= start) else { return false };
        let changed = keep > 0 || self.entries[0].start_offset != start;
        self.entries.drain(..keep);
        self.entries[0].start_offset = start;
        changed
    }
}

/// What a follower does after the leader answered its epoch question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationStep {
    /// Truncate the log to this offset, then fetch from there.
    Done {
        /// New log end.
        truncate_to: i64,
    },
    /// Truncate to this offset, then ask the leader again about `epoch` (the leader never
    /// had the epoch asked about, and this log's previous epoch may diverge too).
    AskAgain {
        /// New log end.
        truncate_to: i64,
        /// The epoch to ask about next.
        epoch: i32,
    },
}

/// The follower's step given its cache and log end and the leader's `(epoch, end_offset)`
/// answer ([`EpochCache::end_offset_for`] on the leader).
pub fn follower_truncation(cache: &EpochCache, log_end: i64, answer: (i32, i64)) -> TruncationStep {
    let (leader_epoch, leader_end) = answer;
    if leader_epoch == UNDEFINED_EPOCH {
        // The leader has no epoch this old: nothing here can be shown to match. Keep only
        // what precedes the leader's first epoch (or nothing, if it has none).
        let to = if leader_end == UNDEFINED_OFFSET { 0 } else { leader_end };
        return TruncationStep::Done { truncate_to: to.min(log_end) };
    }
    let (mine, my_end) = cache.end_offset_for(leader_epoch, log_end);
    if mine == UNDEFINED_EPOCH {
        // Every epoch here is newer than the leader's: all of it diverges.
        let first = if my_end == UNDEFINED_OFFSET { log_end } else { my_end };
        return TruncationStep::Done { truncate_to: leader_end.min(first).min(log_end) };
    }
    let truncate_to = leader_end.min(my_end).min(log_end);
    if mine == leader_epoch {
        TruncationStep::Done { truncate_to }
    } else {
        TruncationStep::AskAgain { truncate_to, epoch: mine }
    }
}

/// The cache's file: `leader-epochs` in the partition directory.
///
/// ```text
/// qwire-leader-epochs 1
/// <count>
/// <epoch> <start_offset>     one line per entry, oldest first
/// ```
#[derive(Debug, Clone)]
pub struct EpochFile {
    path: PathBuf,
}

impl EpochFile {
    /// The file name in a partition directory.
    pub const NAME: &'static str = "leader-epochs";

    /// The file of the partition in `dir`.
    pub fn in_dir(dir: &Path) -> EpochFile {
        EpochFile { path: dir.join(Self::NAME) }
    }

    /// Reads the cache (empty when the file does not exist) and drops entries at or past
    /// `log_end`.
    pub fn load(&self, log_end: i64) -> std::io::Result<EpochCache> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EpochCache::default()),
            Err(e) => return Err(e),
        };
        let bad = |what: &str| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {what}", self.path.display()))
        };
        let mut lines = text.lines();
        if lines.next() != Some("qwire-leader-epochs 1") {
            return Err(bad("unknown header"));
        }
        let count: usize = lines.next().and_then(|l| l.trim().parse().ok()).ok_or_else(|| bad("bad count"))?;
        let mut entries = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let line = lines.next().ok_or_else(|| bad("fewer entries than the count"))?;
            let mut f = line.split_whitespace();
            let epoch = f.next().and_then(|x| x.parse().ok()).ok_or_else(|| bad("bad epoch"))?;
            let start_offset = f.next().and_then(|x| x.parse().ok()).ok_or_else(|| bad("bad offset"))?;
            entries.push(EpochEntry { epoch, start_offset });
        }
        let mut cache = EpochCache::from_entries(entries).ok_or_else(|| bad("entries out of order"))?;
        cache.truncate_from_end(log_end);
        Ok(cache)
    }

    /// Writes the cache atomically and durably (temp file, fsync, rename, fsync dir).
    pub fn store(&self, cache: &EpochCache) -> std::io::Result<()> {
        let mut text = format!("qwire-leader-epochs 1\n{}\n", cache.entries.len());
        for e in &cache.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        write_atomic(&self.path, text.as_bytes(), 0o644, &Syncer::os())
    }
}

#[cfg(test)]
#[path = "epochs_tests.rs"]
mod tests;
