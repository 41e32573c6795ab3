//! Where the registry's events live: the [`RegistryStore`] trait, an fsync'd file for the
//! embedded broker ([`FileStore`]) and an in-memory store ([`MemoryStore`]).
//!
//! The store is an append-only sequence of opaque entries numbered 0, 1, 2, …. Appending
//! is conditional: entry `seq` is written only if exactly `seq` entries precede it, so two
//! brokers sharing one store (a compare-and-swap key-value namespace such as etcd's, with
//! one key per entry created only if absent) never both write entry `seq`: the loser gets
//! [`AppendOutcome::Conflict`], reads what it missed, re-plans and tries again.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A boxed future, as the store's methods return (the trait is object-safe).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema registry store: {0}")]
pub struct StoreError(pub String);

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The entry is durable at the requested sequence number.
    Appended,
    /// Another writer already holds that sequence number: nothing was written.
    Conflict,
}

/// Durable storage for the registry's event log.
pub trait RegistryStore: Send + Sync + 'static {
    /// Every entry from sequence number `from` on, in order (empty when there is none).
    fn read_from(&self, from: u64) -> StoreFuture<'_, Vec<Vec<u8>>>;

    /// Writes `entry` as sequence number `seq` if exactly `seq` entries exist, and returns
    /// only once it is durable. An error means the entry may or may not have been written.
    fn append(&self, seq: u64, entry: Vec<u8>) -> StoreFuture<'_, AppendOutcome>;

    /// Whether other processes append to this store too (a cluster's metadata store): the
    /// registry then catches up before answering each request ([`super::Registry::sync`]).
    fn shared(&self) -> bool {
        false
    }
}

/// Entries in memory: for tests and for registries that need no durability.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<Vec<Vec<u8>>>,
}

impl RegistryStore for MemoryStore {
    fn read_from(&self, from: u64) -> StoreFuture<'_, Vec<Vec<u8>>> {
        let entries = self.entries.lock().expect("poisoned");
        let out = entries.iter().skip(from as usize).cloned().collect();
        Box::pin(async move { Ok(out) })
    }

    fn append(&self, seq: u64, entry: Vec<u8>) -> StoreFuture<'_, AppendOutcome> {
        let mut entries = self.entries.lock().expect("poisoned");
        let outcome = if entries.len() as u64 == seq {
            entries.push(entry);
            AppendOutcome::Appended
        } else {
            AppendOutcome::Conflict
        };
        Box::pin(async move { Ok(outcome) })
    }
}

/// Record header: `u32` big-endian payload length, `u32` big-endian CRC-32C of the payload.
const HEADER: usize = 8;
/// No entry is larger than this (a schema text is far smaller); a larger length is damage.
const MAX_ENTRY: usize = 64 * 1024 * 1024;

/// The embedded broker's store: one append-only file (`registry.log` in its directory),
/// each entry a length, a CRC-32C and the payload; every append is fsync'd before it is
/// acknowledged. Opening recovers: a torn last entry (cut short, or with a bad CRC and
/// nothing after it) is truncated away; damage followed by more data is refused rather
/// than silently dropping acknowledged entries. After a failed write or sync the store
/// refuses further appends until it is reopened (the file's state is then unknown).
#[derive(Debug)]
pub struct FileStore {
    inner: Arc<Mutex<FileInner>>,
}

#[derive(Debug)]
struct FileInner {
    path: PathBuf,
    file: File,
    entries: Vec<Vec<u8>>,
    failed: Option<String>,
}

impl FileStore {
    /// File name inside the store's directory.
    pub const FILE_NAME: &'static str = "registry.log";

    /// Opens (creating if needed) the store in `dir` and recovers its entries.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        let io = |what: &str, e: std::io::Error| StoreError(format!("{what} {}: {e}", dir.display()));
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
        let path = dir.join(Self::FILE_NAME);
        let created = !path.exists();
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(|e| io("opening", e))?;
        if created {
            // Make the new file's directory entry (and the directory's) durable.
            file.sync_all().map_err(|e| io("syncing", e))?;
            sync_dir(dir).map_err(|e| io("syncing", e))?;
            if created_dir {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent).map_err(|e| io("syncing the parent of", e))?;
                }
            }
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(|e| io("reading", e))?;
        file.read_to_end(&mut bytes).map_err(|e| io("reading", e))?;
        let (entries, good) = scan(&bytes).map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        if good < bytes.len() {
            tracing::warn!(path = %path.display(), kept = good, dropped = bytes.len() - good, "truncating a torn schema registry entry");
            file.set_len(good as u64).map_err(|e| io("truncating", e))?;
            file.sync_all().map_err(|e| io("syncing", e))?;
        }
        Ok(FileStore { inner: Arc::new(Mutex::new(FileInner { path, file, entries, failed: None })) })
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Splits the file into entries; returns them and the length of the good prefix.
fn scan(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, usize), String> {
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < HEADER {
            break; // torn header
        }
        let len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > MAX_ENTRY {
            if rest.len() < HEADER + MAX_ENTRY {
                break; // a torn header can read as anything; nothing after it is whole
            }
            return Err(format!("entry at offset {pos} claims {len} bytes"));
        }
        if rest.len() < HEADER + len {
            break; // torn payload
        }
        let payload = &rest[HEADER..HEADER + len];
        if crc32c::crc32c(payload) != crc {
            if rest.len() == HEADER + len {
                break; // the last entry, damaged while being written
            }
            return Err(format!("entry at offset {pos} fails its CRC and is followed by more data"));
        }
        entries.push(payload.to_vec());
        pos += HEADER + len;
    }
    Ok((entries, pos))
}

impl RegistryStore for FileStore {
    fn read_from(&self, from: u64) -> StoreFuture<'_, Vec<Vec<u8>>> {
        let inner = self.inner.lock().expect("poisoned");
        let out = inner.entries.iter().skip(from as usize).cloned().collect();
        Box::pin(async move { Ok(out) })
    }

    fn append(&self, seq: u64, entry: Vec<u8>) -> StoreFuture<'_, AppendOutcome> {
        let inner = self.inner.clone();
        Box::pin(async move {
            // The write and the fsync run off the async runtime.
            tokio::task::spawn_blocking(move || {
                let mut g = inner.lock().expect("poisoned");
                if let Some(reason) = &g.failed {
                    return Err(StoreError(format!(
                        "refusing writes after an earlier failure ({reason}); restart to recover"
                    )));
                }
                if g.entries.len() as u64 != seq {
                    return Ok(AppendOutcome::Conflict);
                }
                if entry.len() > MAX_ENTRY {
                    return Err(StoreError(format!("entry of {} bytes exceeds {MAX_ENTRY}", entry.len())));
                }
                let mut record = Vec::with_capacity(HEADER + entry.len());
                record.extend_from_slice(&(entry.len() as u32).to_be_bytes());
                record.extend_from_slice(&crc32c::crc32c(&entry).to_be_bytes());
                record.extend_from_slice(&entry);
                let written = g.file.write_all(&record).and_then(|()| g.file.sync_data());
                if let Err(e) = written {
                    let reason = format!("writing {}: {e}", g.path.display());
                    g.failed = Some(reason.clone());
                    return Err(StoreError(reason));
                }
                g.entries.push(entry);
                Ok(AppendOutcome::Appended)
            })
            .await
            .map_err(|e| StoreError(format!("store task failed: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn file_store_appends_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("schemas");
        rt().block_on(async {
            let s = FileStore::open(&sub).unwrap();
            assert!(s.read_from(0).await.unwrap().is_empty());
            assert_eq!(s.append(0, b"one".to_vec()).await.unwrap(), AppendOutcome::Appended);
            assert_eq!(s.append(1, b"two".to_vec()).await.unwrap(), AppendOutcome::Appended);
            // A stale sequence number writes nothing.
            assert_eq!(s.append(1, b"late".to_vec()).await.unwrap(), AppendOutcome::Conflict);
            assert_eq!(s.read_from(1).await.unwrap(), vec![b"two".to_vec()]);
        });
        let path = sub.join(FileStore::FILE_NAME);
        // Byte layout: length, CRC-32C, payload.
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], &[0, 0, 0, 3]);
        assert_eq!(&bytes[4..8], &crc32c::crc32c(b"one").to_be_bytes());
        assert_eq!(&bytes[8..11], b"one");
        assert_eq!(bytes.len(), 2 * 8 + 6);
        // A torn tail (half a record) is cut off at open; what was whole survives.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 9, 1, 2]).unwrap();
        drop(f);
        rt().block_on(async {
            let s = FileStore::open(&sub).unwrap();
            assert_eq!(s.read_from(0).await.unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
            assert_eq!(s.append(2, b"three".to_vec()).await.unwrap(), AppendOutcome::Appended);
        });
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * 8 + 11);
        let s = FileStore::open(&sub).unwrap();
        assert_eq!(rt().block_on(s.read_from(0)).unwrap().len(), 3);
    }

    #[test]
    fn a_damaged_last_entry_is_dropped_but_damage_in_the_middle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FileStore::FILE_NAME);
        rt().block_on(async {
            let s = FileStore::open(dir.path()).unwrap();
            s.append(0, b"aaaa".to_vec()).await.unwrap();
            s.append(1, b"bbbb".to_vec()).await.unwrap();
        });
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        assert_eq!(rt().block_on(s.read_from(0)).unwrap(), vec![b"aaaa".to_vec()]);
        drop(s);
        // Damage the first entry of a two-entry file: refused, nothing truncated.
        rt().block_on(FileStore::open(dir.path()).unwrap().append(1, b"cccc".to_vec())).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = FileStore::open(dir.path()).unwrap_err();
        assert!(e.0.contains("CRC"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn memory_store_is_conditional_too() {
        let s = MemoryStore::default();
        rt().block_on(async {
            assert_eq!(s.append(0, vec![1]).await.unwrap(), AppendOutcome::Appended);
            assert_eq!(s.append(0, vec![2]).await.unwrap(), AppendOutcome::Conflict);
            assert_eq!(s.read_from(0).await.unwrap(), vec![vec![1]]);
        });
    }
}
