//! Producer ids: allocation, epochs, and which principal each id belongs to.
//!
//! An id is only valid once issued: the broker refuses idempotent batches and epoch bumps
//! for an id it never handed out (including ids reserved in a block but not yet issued),
//! for an id issued to another principal, and for any epoch other than the id's current
//! one. So a client cannot stamp batches with an id the broker is about to give someone
//! else, and two producers that share an id fence each other by epoch.
//!
//! Persistence, both files written before an answer leaves the broker:
//!
//! ```text
//! DATA_DIR/producer_ids       end of the reserved id block (one decimal line)
//! DATA_DIR/producer_ids.log   one JSON line per issue or bump: {"id","epoch","principal"}
//! ```
//!
//! Ids are reserved in blocks of [`ID_BLOCK`] (the block end is fsync'd before any id of
//! the block is given out, so a crash skips at most the rest of a block). Every issue and
//! bump is appended to the log and fsync'd; the latest line of an id wins. A torn last
//! line (a crash mid-write, never answered) is ignored. The log is rewritten compacted at
//! start-up and when it holds many superseded lines.
//!
//! Each principal keeps at most `max_per_principal` ids: issuing one more forgets its
//! least recently used id, whose producer then gets `INVALID_PRODUCER_ID` and asks for a
//! new one. The cap is checked through an index of each principal's ids, so an issue
//! never looks at other principals' ids.
//!
//! Issues and bumps take turns ([`InitTurn`], an async lock): requests waiting for their
//! turn wait on the runtime, and only the one whose turn it is occupies a blocking thread
//! for its file I/O ([`ProducerIdAllocator::init_blocking`]; call it off the runtime).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::disk::{write_atomic, SyncKind, Syncer};
use crate::protocol::ErrorCode;

/// Ids reserved per write of the block file.
pub const ID_BLOCK: i64 = 1000;
/// Default most ids one principal holds at once.
pub const DEFAULT_MAX_PER_PRINCIPAL: usize = 10_000;

/// Why a producer id or epoch was refused: the wire code and a message.
pub type IdError = (ErrorCode, String);

#[derive(Debug)]
struct Issued {
    principal: Arc<str>,
    epoch: i16,
    /// Last InitProducerId or batch (ms): the least recently used id is forgotten first.
    last_used: AtomicI64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: i64,
    epoch: i16,
    principal: String,
}

/// The issued ids, indexed by id and by principal.
#[derive(Debug, Default)]
struct Ids {
    by_id: HashMap<i64, Issued>,
    /// Each principal's ids: the cap is checked against this, and only these are searched
    /// for the id to forget.
    by_principal: HashMap<Arc<str>, HashSet<i64>>,
}

impl Ids {
    fn insert(&mut self, id: i64, issued: Issued) {
        let principal = issued.principal.clone();
        if let Some(old) = self.by_id.insert(id, issued) {
            if old.principal != principal {
                self.unindex(&old.principal, id);
            }
        }
        self.by_principal.entry(principal).or_default().insert(id);
    }

    fn remove(&mut self, id: i64) {
        if let Some(old) = self.by_id.remove(&id) {
            self.unindex(&old.principal, id);
        }
    }

    /// Forgets the least recently used ids of `principal` beyond `max`, never `keep`.
    /// Looks only at `principal`'s own ids, and only when it holds more than `max`.
    fn enforce_cap(&mut self, max: usize, principal: &Arc<str>, keep: i64) {
        let Some(mine) = self.by_principal.get(principal).filter(|m| m.len() > max) else {
            return;
        };
        let excess = mine.len() - max;
        let mut lru: Vec<(i64, i64)> =
            mine.iter().filter(|id| **id != keep).map(|id| (self.by_id[id].last_used.load(Relaxed), *id)).collect();
        if excess < lru.len() {
            lru.select_nth_unstable(excess);
        }
        lru.truncate(excess);
        for (_, id) in lru {
            self.remove(id);
            tracing::info!(producer_id = id, %principal, "producer id forgotten: its principal holds too many");
        }
    }

    fn unindex(&mut self, principal: &Arc<str>, id: i64) {
        if let Some(mine) = self.by_principal.get_mut(principal) {
            mine.remove(&id);
            if mine.is_empty() {
                self.by_principal.remove(principal);
            }
        }
    }
}

/// The file side, one writer at a time: held through an [`InitTurn`].
#[derive(Debug)]
struct Files {
    block_path: PathBuf,
    log_path: PathBuf,
    log: fs::File,
    /// Lines in the log (superseded ones included).
    lines: usize,
    next: i64,
    block_end: i64,
    syncer: Syncer,
}

/// The turn of one issue or bump: the allocator's files, held until dropped. Taken with
/// [`ProducerIdAllocator::turn`] (waiting on the runtime) and given to
/// [`ProducerIdAllocator::init_blocking`] on a blocking thread.
#[derive(Debug)]
pub struct InitTurn(tokio::sync::OwnedMutexGuard<Files>);

/// Allocates producer ids, bumps epochs and checks the ids stamped on batches.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    ids: RwLock<Ids>,
    files: Arc<tokio::sync::Mutex<Files>>,
    max_per_principal: usize,
}

fn invalid_id(producer_id: i64, why: &str) -> IdError {
    (ErrorCode::InvalidProducerId, format!("producer id {producer_id} {why}; ask for a new id"))
}

impl ProducerIdAllocator {
    /// Opens (or starts) the allocator state in `data_dir`, whose files are fsync'd
    /// through `syncer`. Blocking.
    pub fn open(data_dir: &Path, max_per_principal: usize, syncer: Syncer) -> std::io::Result<Self> {
        let bad = |path: &Path, e: String| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
        };
        let block_path = data_dir.join("producer_ids");
        let start = match fs::read_to_string(&block_path) {
            Ok(s) => s.trim().parse::<i64>().map_err(|e| bad(&block_path, e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let log_path = data_dir.join("producer_ids.log");
        let mut latest: HashMap<i64, (usize, Line)> = HashMap::new();
        match fs::File::open(&log_path) {
            Ok(f) => {
                let lines: Vec<String> = std::io::BufReader::new(f).lines().collect::<Result<_, _>>()?;
                for (n, text) in lines.iter().enumerate() {
                    match serde_json::from_str::<Line>(text) {
                        Ok(l) if l.id >= 0 && l.id < start && l.epoch >= 0 => {
                            latest.insert(l.id, (n, l));
                        }
                        // A crash while appending the last line: it was never answered.
                        Err(_) if n + 1 == lines.len() => {
                            tracing::warn!(path = %log_path.display(), "ignoring a torn last line")
                        }
                        _ => return Err(bad(&log_path, format!("line {}: not a valid producer id entry", n + 1))),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // In log order, so that the cap keeps each principal's newest ids.
        let mut entries: Vec<(usize, Line)> = latest.into_values().collect();
        entries.sort_by_key(|(n, _)| *n);
        let mut ids = Ids::default();
        let mut principals: HashMap<String, Arc<str>> = HashMap::new();
        for (n, l) in entries {
            let principal = principals.entry(l.principal.clone()).or_insert_with(|| Arc::from(l.principal.as_str()));
            ids.insert(
                l.id,
                Issued { principal: principal.clone(), epoch: l.epoch, last_used: AtomicI64::new(n as i64) },
            );
        }
        let mut files = Files {
            block_path,
            log_path: log_path.clone(),
            // Replaced by the compaction below.
            log: fs::OpenOptions::new().create(true).append(true).open(&log_path)?,
            lines: 0,
            next: start,
            block_end: start,
            syncer,
        };
        let max_per_principal = max_per_principal.max(1);
        for p in principals.into_values() {
            ids.enforce_cap(max_per_principal, &p, -1);
        }
        compact(&mut files, &ids)?;
        Ok(ProducerIdAllocator {
            ids: RwLock::new(ids),
            files: Arc::new(tokio::sync::Mutex::new(files)),
            max_per_principal,
        })
    }

    fn read_ids(&self) -> std::sync::RwLockReadGuard<'_, Ids> {
        self.ids.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_ids(&self) -> std::sync::RwLockWriteGuard<'_, Ids> {
        self.ids.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (on the runtime) for the turn to issue or bump an id: one at a time, so
    /// requests waiting behind a slow fsync hold no blocking thread.
    pub async fn turn(&self) -> InitTurn {
        InitTurn(self.files.clone().lock_owned().await)
    }

    /// [`init_blocking`](Self::init_blocking) in its turn on the blocking pool, the
    /// allocator reached through `owner` (whatever holds it, kept alive by the task).
    /// Waiting for the turn holds no blocking thread; the turn goes with the blocking task,
    /// so it ends when the task does even if this future is dropped meanwhile.
    pub async fn init<S: Send + Sync + 'static>(
        owner: Arc<S>,
        allocator: fn(&S) -> &ProducerIdAllocator,
        principal: Arc<str>,
        producer_id: i64,
        epoch: i16,
        now_ms: i64,
    ) -> Result<(i64, i16), IdError> {
        let mut turn = allocator(&owner).turn().await;
        tokio::task::spawn_blocking(move || {
            allocator(&owner).init_blocking(&mut turn, &principal, producer_id, epoch, now_ms)
        })
        .await
        .unwrap_or_else(|e| Err((ErrorCode::Unknown, format!("producer id task failed: {e}"))))
    }

    /// [`turn`](Self::turn) for a caller off the runtime: blocks the calling thread.
    pub fn turn_blocking(&self) -> InitTurn {
        InitTurn(self.files.clone().blocking_lock_owned())
    }

    /// Checks the id stamped on an idempotent batch from `principal` and answers the id's
    /// current epoch. The id must have been issued to that principal, and the batch's
    /// epoch may not be newer than the current one. An *older* epoch is for the partition
    /// to judge (`Partition::append`'s fence): a retry of a batch it remembers for that
    /// epoch is a duplicate, anything else is fenced with `INVALID_PRODUCER_EPOCH`.
    /// Takes a read lock only (no I/O): call it on the request path.
    pub fn check_stamp(&self, principal: &str, producer_id: i64, epoch: i16, now_ms: i64) -> Result<i16, IdError> {
        let ids = self.read_ids();
        let Some(issued) = ids.by_id.get(&producer_id) else {
            return Err(invalid_id(producer_id, "was not issued by this broker (or was forgotten)"));
        };
        if *issued.principal != *principal {
            return Err(invalid_id(producer_id, "was issued to another principal"));
        }
        if epoch > issued.epoch {
            return Err((
                ErrorCode::InvalidProducerEpoch,
                format!("producer {producer_id}: epoch {epoch} was not issued; the current is epoch {}", issued.epoch),
            ));
        }
        issued.last_used.store(now_ms, Relaxed);
        Ok(issued.epoch)
    }

    /// Checks an epoch bump's id and epoch: the id must be `principal`'s and `epoch` its
    /// current one.
    fn check(&self, principal: &str, producer_id: i64, epoch: i16, now_ms: i64) -> Result<(), IdError> {
        let current = self.check_stamp(principal, producer_id, epoch, now_ms)?;
        if epoch < current {
            return Err((
                ErrorCode::InvalidProducerEpoch,
                format!("producer {producer_id}: epoch {epoch} is older than epoch {current}"),
            ));
        }
        Ok(())
    }

    /// Answers `InitProducerId` for `principal`: a new id with epoch 0 when `producer_id`
    /// is -1 (and `epoch` -1); otherwise the next epoch of `producer_id`, which must be
    /// this principal's and presented with its current epoch (a new id when the epoch
    /// would overflow). Blocking: the answer is fsync'd first.
    pub fn init_blocking(
        &self,
        turn: &mut InitTurn,
        principal: &str,
        producer_id: i64,
        epoch: i16,
        now_ms: i64,
    ) -> Result<(i64, i16), IdError> {
        let files = &mut *turn.0;
        // Inits take turns: what is checked here still holds when applied.
        let bump = match (producer_id, epoch) {
            (-1, -1) => false,
            (id, _) if id < 0 => {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("producer id {id} epoch {epoch}: use -1, -1 for a new id"),
                ))
            }
            (id, e) => {
                self.check(principal, id, e, now_ms)?;
                e < i16::MAX
            }
        };
        let (id, new_epoch, principal): (i64, i16, Arc<str>) = if bump {
            let ids = self.read_ids();
            (producer_id, epoch + 1, ids.by_id[&producer_id].principal.clone())
        } else {
            if files.next == files.block_end {
                let end = files.block_end + ID_BLOCK;
                write_atomic(&files.block_path, format!("{end}\n").as_bytes(), 0o644, &files.syncer)
                    .map_err(|e| (ErrorCode::StorageError, format!("persisting producer ids: {e}")))?;
                files.block_end = end;
            }
            let id = files.next;
            files.next += 1;
            (id, 0, Arc::from(principal))
        };
        let line = Line { id, epoch: new_epoch, principal: principal.to_string() };
        append_line(files, &line).map_err(|e| (ErrorCode::StorageError, format!("persisting producer ids: {e}")))?;
        {
            let mut ids = self.write_ids();
            ids.insert(
                id,
                Issued { principal: principal.clone(), epoch: new_epoch, last_used: AtomicI64::new(now_ms) },
            );
        }
        self.enforce_cap(&principal, id);
        let live = self.len();
        if files.lines > 2 * live + 1024 {
            let ids = self.read_ids();
            if let Err(e) = compact(files, &ids) {
                tracing::warn!(error = %e, "compacting the producer id log failed; it keeps growing until the next try");
            }
        }
        Ok((id, new_epoch))
    }

    /// Forgets the least recently used ids of `principal` beyond the cap, never `keep`.
    fn enforce_cap(&self, principal: &Arc<str>, keep: i64) {
        self.write_ids().enforce_cap(self.max_per_principal, principal, keep);
    }

    /// Ids currently issued.
    pub fn len(&self) -> usize {
        self.read_ids().by_id.len()
    }

    /// Ids currently issued to `principal` (read from the index).
    pub fn held_by(&self, principal: &str) -> usize {
        self.read_ids().by_principal.get(principal).map_or(0, HashSet::len)
    }

    /// True when no id is issued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn append_line(files: &mut Files, line: &Line) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    text.push(b'\n');
    files.log.write_all(&text)?;
    files.syncer.sync(&files.log, &files.log_path, SyncKind::Data)?;
    files.lines += 1;
    Ok(())
}

/// Rewrites the log with one line per issued id and reopens it for appending.
fn compact(files: &mut Files, ids: &Ids) -> std::io::Result<()> {
    let mut sorted: Vec<(&i64, &Issued)> = ids.by_id.iter().collect();
    sorted.sort_by_key(|(id, _)| **id);
    let mut text = Vec::new();
    for (id, i) in &sorted {
        serde_json::to_writer(&mut text, &Line { id: **id, epoch: i.epoch, principal: i.principal.to_string() })
            .map_err(std::io::Error::other)?;
        text.push(b'\n');
    }
    write_atomic(&files.log_path, &text, 0o644, &files.syncer)?;
    files.log = fs::OpenOptions::new().append(true).open(&files.log_path)?;
    files.lines = sorted.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One issue or bump in its own turn.
    fn init(a: &ProducerIdAllocator, principal: &str, id: i64, epoch: i16, now: i64) -> Result<(i64, i16), IdError> {
        a.init_blocking(&mut a.turn_blocking(), principal, id, epoch, now)
    }

    fn code<T: std::fmt::Debug>(r: Result<T, IdError>) -> ErrorCode {
        r.unwrap_err().0
    }

    #[test]
    fn ids_are_unique_across_restarts_and_epochs_bump() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path(), 10, Syncer::os()).unwrap();
        let (id0, e0) = init(&a, "p", -1, -1, 0).unwrap();
        let (id1, _) = init(&a, "p", -1, -1, 0).unwrap();
        assert_eq!((id0, e0, id1), (0, 0, 1));
        assert_eq!(init(&a, "p", id0, 0, 0).unwrap(), (id0, 1));
        drop(a);
        let b = ProducerIdAllocator::open(dir.path(), 10, Syncer::os()).unwrap();
        // What was issued survives, with its epoch and principal.
        b.check("p", id0, 1, 0).unwrap();
        b.check("p", id1, 0, 0).unwrap();
        let (id2, _) = init(&b, "p", -1, -1, 0).unwrap();
        assert!(id2 >= ID_BLOCK, "id {id2} may repeat one issued before the restart");
    }

    #[test]
    fn only_issued_ids_at_their_current_epoch_and_principal_pass() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path(), 10, Syncer::os()).unwrap();
        let (id, _) = init(&a, "alice", -1, -1, 0).unwrap();
        // Reserved in the block but not issued yet; and far beyond it.
        assert_eq!(code(a.check("alice", id + 1, 0, 0)), ErrorCode::InvalidProducerId);
        assert_eq!(code(init(&a, "alice", id + 1, 0, 0)), ErrorCode::InvalidProducerId);
        assert_eq!(code(a.check("alice", 5000, 0, 0)), ErrorCode::InvalidProducerId);
        // Another principal may neither stamp nor bump it.
        assert_eq!(code(a.check("bob", id, 0, 0)), ErrorCode::InvalidProducerId);
        assert_eq!(code(init(&a, "bob", id, 0, 0)), ErrorCode::InvalidProducerId);
        // Epochs: only the current one.
        assert_eq!(code(a.check("alice", id, 1, 0)), ErrorCode::InvalidProducerEpoch);
        assert_eq!(init(&a, "alice", id, 0, 0).unwrap(), (id, 1));
        assert_eq!(init(&a, "alice", id, 1, 0).unwrap(), (id, 2));
        assert_eq!(code(a.check("alice", id, 1, 0)), ErrorCode::InvalidProducerEpoch);
        // A bump presenting an older epoch (the fenced producer's) is refused.
        assert_eq!(code(init(&a, "alice", id, 0, 0)), ErrorCode::InvalidProducerEpoch);
        assert_eq!(code(init(&a, "alice", id, 3, 0)), ErrorCode::InvalidProducerEpoch);
        assert_eq!(code(init(&a, "alice", -2, -1, 0)), ErrorCode::InvalidRequest);
        a.check("alice", id, 2, 0).unwrap();
    }

    #[test]
    fn an_exhausted_epoch_gets_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path(), 10, Syncer::os()).unwrap();
        let (id, _) = init(&a, "p", -1, -1, 0).unwrap();
        a.write_ids().by_id.get_mut(&id).unwrap().epoch = i16::MAX;
        let (new, epoch) = init(&a, "p", id, i16::MAX, 0).unwrap();
        assert_ne!(new, id);
        assert_eq!(epoch, 0);
    }

    #[test]
    fn a_principal_keeps_its_most_recently_used_ids_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path(), 3, Syncer::os()).unwrap();
        let ids: Vec<i64> = (0..3).map(|t| init(&a, "p", -1, -1, t).unwrap().0).collect();
        init(&a, "q", -1, -1, 0).unwrap();
        // The oldest id is used again: the second one is now the least recently used.
        a.check("p", ids[0], 0, 10).unwrap();
        let fourth = init(&a, "p", -1, -1, 11).unwrap().0;
        assert_eq!(code(a.check("p", ids[1], 0, 12)), ErrorCode::InvalidProducerId);
        for id in [ids[0], ids[2], fourth] {
            a.check("p", id, 0, 12).unwrap();
        }
        assert_eq!(a.len(), 4, "another principal's ids are untouched");
        drop(a);
        let b = ProducerIdAllocator::open(dir.path(), 3, Syncer::os()).unwrap();
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_other_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path(), 10, Syncer::os()).unwrap();
        let (id, _) = init(&a, "p", -1, -1, 0).unwrap();
        drop(a);
        let log = dir.path().join("producer_ids.log");
        let mut text = fs::read_to_string(&log).unwrap();
        text.push_str("{\"id\":1,\"ep");
        fs::write(&log, &text).unwrap();
        let b = ProducerIdAllocator::open(dir.path(), 10, Syncer::os()).unwrap();
        b.check("p", id, 0, 0).unwrap();
        drop(b);
        fs::write(&log, format!("garbage\n{text}\n")).unwrap();
        assert!(ProducerIdAllocator::open(dir.path(), 10, Syncer::os()).is_err());
    }

    /// Each InitProducerId used to take a blocking thread and then wait there for the
    /// allocator's std mutex while another one's fsync ran: a slow disk let concurrent
    /// requests fill the blocking pool, and every other blocking job (log reads, appends)
    /// queued behind them. Now they wait for their turn on the runtime.
    #[test]
    fn inits_waiting_for_their_turn_hold_no_blocking_thread() {
        use std::sync::{Condvar, Mutex};
        use std::time::{Duration, Instant};

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let gate = Arc::new((Mutex::new((true, 0usize)), Condvar::new()));
        let g = gate.clone();
        let syncer = Syncer::with_hook(move |path, _| {
            if path.file_name().is_some_and(|n| n == "producer_ids.log") {
                let (lock, cv) = &*g;
                let mut state = lock.lock().unwrap();
                state.1 += 1;
                let deadline = Instant::now() + Duration::from_secs(60);
                while state.0 && Instant::now() < deadline {
                    state = cv.wait_timeout(state, Duration::from_millis(50)).unwrap().0;
                }
            }
            Ok(())
        });
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(ProducerIdAllocator::open(dir.path(), 100, syncer).unwrap());
        rt.block_on(async {
            let inits: Vec<_> = (0..8)
                .map(|_| tokio::spawn(ProducerIdAllocator::init(a.clone(), |a| a, Arc::from("p"), -1, -1, 0)))
                .collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            while gate.0.lock().unwrap().1 == 0 {
                assert!(Instant::now() < deadline, "no init reached its fsync");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            // One blocking thread is in the held fsync; the other must be free.
            let probe = tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(|| 7)).await;
            assert_eq!(gate.0.lock().unwrap().1, 1, "a second init entered its fsync beside the first");
            gate.0.lock().unwrap().0 = false;
            gate.1.notify_all();
            assert_eq!(probe.expect("the blocking pool was full of waiting inits").unwrap(), 7);
            let mut ids = HashSet::new();
            for i in inits {
                assert!(ids.insert(i.await.unwrap().unwrap().0));
            }
            assert_eq!(ids.len(), 8);
        });
        assert_eq!(a.held_by("p"), 8);
    }

    /// The cap is checked against the principal's own ids (an index), and the index
    /// follows every issue, forgetting and restart.
    #[test]
    fn the_per_principal_index_follows_issues_forgetting_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path(), 2, Syncer::os()).unwrap();
        for t in 0..5 {
            init(&a, "p", -1, -1, t).unwrap();
        }
        let (q, _) = init(&a, "q", -1, -1, 0).unwrap();
        init(&a, "q", q, 0, 1).unwrap();
        assert_eq!((a.held_by("p"), a.held_by("q"), a.held_by("r"), a.len()), (2, 1, 0, 3));
        drop(a);
        let b = ProducerIdAllocator::open(dir.path(), 1, Syncer::os()).unwrap();
        assert_eq!((b.held_by("p"), b.held_by("q"), b.len()), (1, 1, 2));
        assert_eq!(b.read_ids().by_principal.values().map(HashSet::len).sum::<usize>(), b.len());
    }
}
