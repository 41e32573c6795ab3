//! The sparse offset index of one segment.
//!
//! The `.index` file is a run of 8-byte entries, `(relative offset u32 BE, file position
//! u32 BE)`, one for the first batch of the segment and then one for the first batch
//! that starts after at least `index_interval_bytes` of log since the previous entry.
//! The rule is a pure function of the log, so recovery recomputes the entries from the
//! batches it scans and rewrites the file when it disagrees: the index is a cache, the
//! log is the truth.
//!
//! The entries are also kept in memory (8 bytes per `index_interval_bytes` of log, 0.2%
//! at the default 4 KiB), which is what [`super::PartitionLog::read`] searches.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::Path;

/// Bytes per index entry.
pub(super) const ENTRY_LEN: usize = 8;

/// One index entry: the batch whose base offset is `segment base + rel_offset` starts at
/// byte `position` of the segment's `.log` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IndexEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub rel_offset: u32,
    /// Byte position of the batch in the `.log` file.
    pub position: u32,
}

impl IndexEntry {
    fn to_bytes(self) -> [u8; ENTRY_LEN] {
        let mut out = [0; ENTRY_LEN];
        out[..4].copy_from_slice(&self.rel_offset.to_be_bytes());
        out[4..].copy_from_slice(&self.position.to_be_bytes());
        out
    }
}

/// The in-memory index of a segment and the rule deciding which batch gets an entry.
#[derive(Debug)]
pub(super) struct OffsetIndex {
    entries: Vec<IndexEntry>,
    interval_bytes: u64,
    bytes_since_entry: u64,
}

impl OffsetIndex {
    /// An empty index that adds an entry at most every `interval_bytes` of log
    /// (0: every batch).
    pub fn new(interval_bytes: u32) -> Self {
        OffsetIndex { entries: Vec::new(), interval_bytes: u64::from(interval_bytes), bytes_since_entry: 0 }
    }

    /// Records that a batch of `len` bytes was stored at `position`; returns the entry
    /// when the batch gets one. Must be called for every batch of the segment, in order.
    pub fn observe(&mut self, rel_offset: u32, position: u32, len: u64) -> Option<IndexEntry> {
        let due = self.entries.is_empty() || self.bytes_since_entry >= self.interval_bytes;
        let entry = due.then(|| {
            let entry = IndexEntry { rel_offset, position };
            self.entries.push(entry);
            self.bytes_since_entry = 0;
            entry
        });
        self.bytes_since_entry += len;
        entry
    }

    /// File position of the last indexed batch whose base offset is at or below
    /// `rel_offset` (0 when there is none): where a scan for that offset starts.
    pub fn lookup(&self, rel_offset: u32) -> u32 {
        let after = self.entries.partition_point(|e| e.rel_offset <= rel_offset);
        after.checked_sub(1).map_or(0, |i| self.entries[i].position)
    }

    /// The entries, in file order.
    #[cfg(test)]
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The `.index` file contents for these entries.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            out.extend_from_slice(&e.to_bytes());
        }
        out
    }
}

/// Why an index file was rewritten by [`reconcile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reconciled {
    /// The file already held exactly the expected entries.
    Unchanged,
    /// The file did not exist.
    Missing,
    /// The file existed with other contents (short, stale, corrupt or built with another
    /// interval).
    Rewritten,
}

/// Makes the index file at `path` hold exactly `index`'s entries, reading it first and
/// writing only when it differs. Not fsync'd: a lost or torn index is rebuilt at the
/// next open.
pub(super) fn reconcile(path: &Path, index: &OffsetIndex) -> io::Result<Reconciled> {
    let want = index.encode();
    let outcome = match File::open(path) {
        Ok(mut f) => {
            let mut have = Vec::with_capacity(want.len());
            // Read at most one byte more than expected: enough to see a longer file.
            Read::by_ref(&mut f).take(want.len() as u64 + 1).read_to_end(&mut have)?;
            if have == want {
                return Ok(Reconciled::Unchanged);
            }
            Reconciled::Rewritten
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Reconciled::Missing,
        Err(e) => return Err(e),
    };
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    f.write_all(&want)?;
    Ok(outcome)
}

/// Appends `entry` to an open index file writer.
pub(super) fn write_entry(w: &mut impl Write, entry: IndexEntry) -> io::Result<()> {
    w.write_all(&entry.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_batch_always_indexed_then_every_interval() {
        let mut idx = OffsetIndex::new(100);
        assert!(idx.observe(0, 0, 60).is_some());
        assert!(idx.observe(1, 60, 60).is_none());
        // 120 bytes since the last entry >= 100: this batch gets one.
        assert_eq!(idx.observe(2, 120, 60), Some(IndexEntry { rel_offset: 2, position: 120 }));
        assert!(idx.observe(3, 180, 10).is_none());
        assert_eq!(idx.lookup(0), 0);
        assert_eq!(idx.lookup(1), 0);
        assert_eq!(idx.lookup(2), 120);
        assert_eq!(idx.lookup(u32::MAX), 120);
        assert_eq!(OffsetIndex::new(100).lookup(5), 0);
    }

    #[test]
    fn zero_interval_indexes_every_batch() {
        let mut idx = OffsetIndex::new(0);
        for i in 0..5u32 {
            assert!(idx.observe(i, i * 70, 70).is_some());
        }
        assert_eq!(idx.entries().len(), 5);
    }

    #[test]
    fn byte_vector_of_an_entry() {
        let mut idx = OffsetIndex::new(4096);
        idx.observe(0x0102_0304, 0x0a0b_0c0d, 1);
        assert_eq!(idx.encode(), vec![1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
    }

    #[test]
    fn reconcile_rewrites_only_when_different() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let mut idx = OffsetIndex::new(0);
        idx.observe(0, 0, 10);
        idx.observe(1, 10, 10);
        assert_eq!(reconcile(&path, &idx).unwrap(), Reconciled::Missing);
        assert_eq!(reconcile(&path, &idx).unwrap(), Reconciled::Unchanged);
        std::fs::write(&path, [0u8; 12]).unwrap();
        assert_eq!(reconcile(&path, &idx).unwrap(), Reconciled::Rewritten);
        assert_eq!(std::fs::read(&path).unwrap(), idx.encode());
        std::fs::write(&path, [&idx.encode()[..], &[9u8; 3]].concat()).unwrap();
        assert_eq!(reconcile(&path, &idx).unwrap(), Reconciled::Rewritten);
        assert_eq!(std::fs::read(&path).unwrap(), idx.encode());
    }
}
