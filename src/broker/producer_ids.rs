//! Producer id allocation, persisted so ids are never handed out twice across restarts.
//!
//! Ids are reserved in blocks of [`ID_BLOCK`]: the end of the current block is written
//! and fsync'd to `DATA_DIR/producer_ids` before any id of the block is given out, so a
//! crash skips at most the rest of a block.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::disk::{write_atomic, Syncer};
use crate::protocol::ErrorCode;

/// Ids reserved per write of the state file.
pub const ID_BLOCK: i64 = 1000;

/// Allocates producer ids and bumps epochs.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    path: PathBuf,
    state: Mutex<(i64, i64)>, // (next id, end of reserved block)
}

impl ProducerIdAllocator {
    /// Opens (or starts) the allocator state in `data_dir`.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("producer_ids");
        let start = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<i64>().map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(ProducerIdAllocator { path, state: Mutex::new((start, start)) })
    }

    fn persist(&self, block_end: i64) -> std::io::Result<()> {
        write_atomic(&self.path, format!("{block_end}\n").as_bytes(), 0o644, &Syncer::os())
    }

    /// Answers `InitProducerId`: a new id with epoch 0 when `producer_id` is -1;
    /// otherwise the same id with the next epoch (a new id when the epoch would overflow).
    /// Blocking when it persists a new block: call it off the async runtime.
    pub fn init(&self, producer_id: i64, epoch: i16) -> Result<(i64, i16), (ErrorCode, String)> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if producer_id >= 0 {
            if producer_id >= st.1 || epoch < 0 {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("producer id {producer_id} epoch {epoch} was not issued by this broker"),
                ));
            }
            if epoch < i16::MAX {
                return Ok((producer_id, epoch + 1));
            }
        } else if producer_id != -1 {
            return Err((ErrorCode::InvalidRequest, format!("producer id {producer_id} is invalid")));
        }
        if st.0 == st.1 {
            let end = st.1 + ID_BLOCK;
            self.persist(end).map_err(|e| (ErrorCode::StorageError, format!("persisting producer ids: {e}")))?;
            st.1 = end;
        }
        let id = st.0;
        st.0 += 1;
        Ok((id, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts_and_epochs_bump() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path()).unwrap();
        let (id0, e0) = a.init(-1, -1).unwrap();
        let (id1, _) = a.init(-1, -1).unwrap();
        assert_eq!((id0, e0, id1), (0, 0, 1));
        assert_eq!(a.init(id0, 0).unwrap(), (id0, 1));
        assert!(a.init(5000, 0).is_err());
        drop(a);
        let b = ProducerIdAllocator::open(dir.path()).unwrap();
        let (id2, _) = b.init(-1, -1).unwrap();
        assert!(id2 >= ID_BLOCK, "id {id2} may repeat one issued before the restart");
        assert_ne!(b.init(id2, i16::MAX).unwrap().0, id2);
    }
}
