//! The embedded metadata store: etcd's semantics in the broker's own process, for
//! single-node mode.
//!
//! State lives in memory behind one `std::sync::Mutex` (never held across `.await`).
//! With a file, every transaction that changes a key not attached to a lease writes the
//! whole persistent map to the file (write, fsync, rename, fsync the directory) *before*
//! the change becomes visible, and writes are serialised by an async lock, so what a
//! caller saw succeed survives a crash. Keys under a lease are ephemeral, as their leases
//! are: they are not persisted. The map is small (topics, partitions, a few counters), so
//! rewriting it whole keeps recovery trivial.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::broker::disk::{write_atomic, Syncer};

use super::{
    Compare, KeyValue, LeaderKey, LeaseId, MetaStore, Op, Revision, StoreError, Txn, TxnOutcome, WatchEvent,
    WatchReceiver,
};

/// Events kept for watches that start in the past; older starts get
/// [`StoreError::Compacted`], as with etcd after a compaction.
const HISTORY: usize = 16 * 1024;
/// Capacity of a watcher's channel. A watcher that falls this far behind is dropped (its
/// channel closes) and re-reads, as after any watch failure.
const WATCH_BUFFER: usize = 4096;

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    create_revision: Revision,
    mod_revision: Revision,
    lease: LeaseId,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Result<Vec<WatchEvent>, StoreError>>,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    keys: BTreeMap<String, Entry>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    history: VecDeque<WatchEvent>,
    watchers: Vec<Watcher>,
}

#[derive(Serialize, Deserialize)]
struct FileImage {
    revision: Revision,
    keys: Vec<FileKey>,
}

#[derive(Serialize, Deserialize)]
struct FileKey {
    key: String,
    value_hex: String,
    create_revision: Revision,
    mod_revision: Revision,
}

/// The in-process store. Cheap to clone (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Serialises writers so file images are written in revision order.
    write_lock: tokio::sync::Mutex<()>,
    changed: Notify,
    file: Option<PathBuf>,
}

impl EmbeddedStore {
    /// A store that keeps nothing across restarts.
    pub fn in_memory() -> EmbeddedStore {
        EmbeddedStore::from_state(State { next_lease: 1, ..State::default() }, None)
    }

    /// A store persisted to `path` (created on the first write), loading what is there.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let err = |detail: String| StoreError::Storage { path: path.display().to_string(), detail };
        let mut state = State { next_lease: 1, ..State::default() };
        match std::fs::read(path) {
            Ok(bytes) => {
                let image: FileImage = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
                state.revision = image.revision;
                for k in image.keys {
                    let value = hex_decode(&k.value_hex).ok_or_else(|| err(format!("bad hex value for {}", k.key)))?;
                    let entry =
                        Entry { value, create_revision: k.create_revision, mod_revision: k.mod_revision, lease: 0 };
                    state.keys.insert(k.key, entry);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e.to_string())),
        }
        Ok(EmbeddedStore::from_state(state, Some(path.to_path_buf())))
    }

    fn from_state(state: State, file: Option<PathBuf>) -> EmbeddedStore {
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            write_lock: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
            file,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap_leases(Arc::downgrade(&inner)));
        }
        EmbeddedStore { inner }
    }
}

/// Ends expired leases about ten times a second until the store is dropped.
async fn reap_leases(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(inner) = inner.upgrade() else { return };
        let _writer = inner.write_lock.lock().await;
        inner.lock().expire(Instant::now());
        inner.changed.notify_waiters();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn kv(&self, key: &str, e: &Entry) -> KeyValue {
        let _ = self;
        KeyValue {
            key: key.to_owned(),
            value: e.value.clone(),
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            lease: e.lease,
        }
    }

    fn holds(&self, c: &Compare) -> bool {
        match c {
            Compare::Absent(k) => !self.keys.contains_key(k),
            Compare::ModRevision(k, r) => self.keys.get(k).is_some_and(|e| e.mod_revision == *r),
            Compare::CreateRevision(k, r) => self.keys.get(k).is_some_and(|e| e.create_revision == *r),
        }
    }

    /// Applies `ops` at a new revision and returns the events.
    fn apply(&mut self, ops: &[Op]) -> Vec<WatchEvent> {
        self.revision += 1;
        let rev = self.revision;
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let create_revision = self.keys.get(key).map_or(rev, |e| e.create_revision);
                    let e = Entry { value: value.clone(), create_revision, mod_revision: rev, lease: *lease };
                    events.push(WatchEvent::Put(self.kv(key, &e)));
                    self.keys.insert(key.clone(), e);
                }
                Op::Delete { key } => {
                    if self.keys.remove(key).is_some() {
                        events.push(WatchEvent::Delete { key: key.clone(), mod_revision: rev });
                    }
                }
            }
        }
        self.publish(&events);
        events
    }

    fn publish(&mut self, events: &[WatchEvent]) {
        for ev in events {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(ev.clone());
        }
        self.watchers.retain(|w| {
            let mine: Vec<WatchEvent> = events.iter().filter(|e| e.key().starts_with(&w.prefix)).cloned().collect();
            mine.is_empty() || w.tx.try_send(Ok(mine)).is_ok()
        });
    }

    /// Ends every lease whose deadline has passed, deleting its keys.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<LeaseId> = self.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            self.end_lease(id);
        }
    }

    fn end_lease(&mut self, id: LeaseId) {
        if self.leases.remove(&id).is_none() {
            return;
        }
        let keys: Vec<String> = self.keys.iter().filter(|(_, e)| e.lease == id).map(|(k, _)| k.clone()).collect();
        if !keys.is_empty() {
            let ops: Vec<Op> = keys.into_iter().map(|key| Op::Delete { key }).collect();
            self.apply(&ops);
        }
    }

    fn image(&self) -> FileImage {
        FileImage {
            revision: self.revision,
            keys: self
                .keys
                .iter()
                .filter(|(_, e)| e.lease == 0)
                .map(|(k, e)| FileKey {
                    key: k.clone(),
                    value_hex: hex_encode(&e.value),
                    create_revision: e.create_revision,
                    mod_revision: e.mod_revision,
                })
                .collect(),
        }
    }

    fn leader_of(&self, name: &str) -> Option<(LeaderKey, Vec<u8>)> {
        let prefix = format!("{name}/");
        self.keys
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .min_by_key(|(_, e)| e.create_revision)
            .map(|(k, e)| {
                let key = LeaderKey {
                    name: name.to_owned(),
                    key: k.clone(),
                    create_revision: e.create_revision,
                    lease: e.lease,
                };
                (key, e.value.clone())
            })
    }
}

#[async_trait]
impl MetaStore for EmbeddedStore {
    fn describe(&self) -> String {
        match &self.inner.file {
            Some(p) => format!("embedded store {}", p.display()),
            None => "embedded store (memory)".into(),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let st = self.inner.lock();
        Ok(st.keys.get(key).map(|e| st.kv(key, e)))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let st = self.inner.lock();
        let kvs = st
            .keys
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| st.kv(k, e))
            .collect();
        Ok((kvs, st.revision))
    }

    async fn list_from(&self, prefix: &str, from_key: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let st = self.inner.lock();
        let start = if from_key > prefix { from_key } else { prefix };
        let kvs = st
            .keys
            .range(start.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| st.kv(k, e))
            .collect();
        Ok((kvs, st.revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        // Every change to the state (transactions, lease expiry, revocation) holds the
        // write lock, so what is checked here is still true when it is applied below,
        // after the file write.
        let _writer = self.inner.write_lock.lock().await;
        let image = {
            let mut st = self.inner.lock();
            st.expire(Instant::now());
            for op in &txn.ops {
                if let Op::Put { key, lease, .. } = op {
                    if *lease != 0 && !st.leases.contains_key(lease) {
                        return Err(StoreError::LeaseExpired { lease: *lease });
                    }
                    if key.is_empty() {
                        return Err(StoreError::Refused { op: "txn", detail: "empty key".into() });
                    }
                }
            }
            if !txn.compares.iter().all(|c| st.holds(c)) {
                return Ok(TxnOutcome { succeeded: false, revision: st.revision });
            }
            let persistent = txn.ops.iter().any(|op| match op {
                Op::Put { lease, .. } => *lease == 0,
                Op::Delete { key } => st.keys.get(key).is_some_and(|e| e.lease == 0),
            });
            match (&self.inner.file, persistent) {
                (Some(_), true) => {
                    // The image with the change applied, without applying it yet: if the
                    // file cannot be written, nothing changes.
                    let mut next = FileImageBuilder::from(&st);
                    next.apply(&txn.ops);
                    Some(next.finish())
                }
                _ => None,
            }
        };
        if let (Some(image), Some(path)) = (image, self.inner.file.clone()) {
            let bytes = serde_json::to_vec(&image).expect("serialisable");
            let p = path.clone();
            tokio::task::spawn_blocking(move || write_atomic(&p, &bytes, 0o644, &Syncer::os()))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|detail| StoreError::Storage { path: path.display().to_string(), detail })?;
        }
        let mut st = self.inner.lock();
        st.apply(&txn.ops);
        let revision = st.revision;
        drop(st);
        self.inner.changed.notify_waiters();
        Ok(TxnOutcome { succeeded: true, revision })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl = ttl.max(Duration::from_secs(1));
        let mut st = self.inner.lock();
        let id = st.next_lease;
        st.next_lease += 1;
        st.leases.insert(id, Lease { ttl, deadline: Instant::now() + ttl });
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        // An expired lease that the reaper has not ended yet is expired all the same.
        let now = Instant::now();
        let mut st = self.inner.lock();
        let l = st.leases.get_mut(&lease).filter(|l| l.deadline > now).ok_or(StoreError::LeaseExpired { lease })?;
        l.deadline = now + l.ttl;
        Ok(l.ttl)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let _writer = self.inner.write_lock.lock().await;
        self.inner.lock().end_lease(lease);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchReceiver, StoreError> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let mut st = self.inner.lock();
        let oldest = st.history.front().map_or(st.revision + 1, WatchEvent::revision);
        if from_revision < oldest && from_revision <= st.revision {
            return Err(StoreError::Compacted { revision: from_revision, compacted: oldest });
        }
        let past: Vec<WatchEvent> = st
            .history
            .iter()
            .filter(|e| e.revision() >= from_revision && e.key().starts_with(prefix))
            .cloned()
            .collect();
        if !past.is_empty() {
            tx.try_send(Ok(past)).expect("a new channel has room");
        }
        st.watchers.push(Watcher { prefix: prefix.to_owned(), tx });
        Ok(rx)
    }

    async fn campaign(&self, name: &str, value: &[u8], lease: LeaseId) -> Result<LeaderKey, StoreError> {
        let key = format!("{name}/{lease:x}");
        let txn = Txn::new().when(Compare::Absent(key.clone())).put_leased(key.clone(), value.to_vec(), lease);
        self.txn(txn).await?;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.inner.lock();
                let Some(mine) = st.keys.get(&key) else {
                    return Err(StoreError::LeaseExpired { lease });
                };
                let mine = mine.create_revision;
                if let Some((leader, _)) = st.leader_of(name) {
                    if leader.create_revision == mine {
                        return Ok(leader);
                    }
                }
            }
            notified.await;
        }
    }

    async fn election_leader(&self, name: &str) -> Result<Option<(LeaderKey, Vec<u8>)>, StoreError> {
        Ok(self.inner.lock().leader_of(name))
    }

    async fn resign(&self, leader: &LeaderKey) -> Result<(), StoreError> {
        let txn = Txn::new().when(leader.guard()).delete(leader.key.clone());
        self.txn(txn).await.map(|_| ())
    }
}

/// The persistent part of the state with a transaction's operations applied, built
/// without touching the live state.
struct FileImageBuilder {
    revision: Revision,
    keys: BTreeMap<String, (Vec<u8>, Revision, Revision)>,
}

impl FileImageBuilder {
    fn from(st: &State) -> FileImageBuilder {
        let keys = st
            .keys
            .iter()
            .filter(|(_, e)| e.lease == 0)
            .map(|(k, e)| (k.clone(), (e.value.clone(), e.create_revision, e.mod_revision)))
            .collect();
        FileImageBuilder { revision: st.revision, keys }
    }

    fn apply(&mut self, ops: &[Op]) {
        self.revision += 1;
        for op in ops {
            match op {
                Op::Put { key, value, lease: 0 } => {
                    let create = self.keys.get(key).map_or(self.revision, |e| e.1);
                    self.keys.insert(key.clone(), (value.clone(), create, self.revision));
                }
                Op::Put { key, .. } | Op::Delete { key } => {
                    self.keys.remove(key);
                }
            }
        }
    }

    fn finish(self) -> FileImage {
        FileImage {
            revision: self.revision,
            keys: self
                .keys
                .into_iter()
                .map(|(key, (v, c, m))| FileKey { key, value_hex: hex_encode(&v), create_revision: c, mod_revision: m })
                .collect(),
        }
    }
}

impl EmbeddedStore {
    /// The persistent keys as they would be written to the file (for tests and
    /// diagnostics).
    pub fn persistent_len(&self) -> usize {
        self.inner.lock().image().keys.len()
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
#[path = "embedded_tests.rs"]
mod tests;
