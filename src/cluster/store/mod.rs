//! The metadata store: a small versioned key-value interface with etcd's semantics, and
//! its two implementations.
//!
//! Everything the cluster keeps outside the partition logs (live brokers, the controller,
//! topics and partition states, producer-id blocks, the schema registry's keys) is written
//! through [`MetaStore`]. The typed layer above it ([`super::metadata`]) is the same code in
//! both modes:
//!
//! - [`EmbeddedStore`]: in the broker's own process, for single-node mode (no etcd);
//!   optionally persisted to one file in the data directory.
//! - `EtcdStore` (cargo feature `cluster`): etcd's v3 API.
//!
//! The semantics are etcd's, so code tested against one behaves the same on the other:
//! one revision counter for the whole store, incremented by every write transaction; each
//! key has a create revision (0 when absent), a modification revision and a lease; a
//! transaction applies its operations only when every comparison holds; a key written
//! under a lease vanishes when the lease expires or is revoked; a watch delivers every
//! change after a given revision, in order.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

mod embedded;
#[cfg(feature = "cluster")]
mod etcd;

pub use embedded::EmbeddedStore;
#[cfg(feature = "cluster")]
pub use etcd::{EtcdConfig, EtcdStore};

/// A store revision: etcd's global, monotonically increasing write counter.
pub type Revision = i64;
/// A lease id. Keys written under a lease are deleted when it ends.
pub type LeaseId = i64;

/// A stored key with its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (since it was last absent).
    pub create_revision: Revision,
    /// Revision of the last transaction that wrote it.
    pub mod_revision: Revision,
    /// The lease it is attached to, 0 for none.
    pub lease: LeaseId,
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last written at exactly this revision.
    ModRevision(String, Revision),
    /// The key exists and was created at exactly this revision (the fencing check of a
    /// lease-held key such as an election key or a broker registration).
    CreateRevision(String, Revision),
}

impl Compare {
    /// The key the condition is about.
    pub fn key(&self) -> &str {
        match self {
            Compare::Absent(k) | Compare::ModRevision(k, _) | Compare::CreateRevision(k, _) => k,
        }
    }
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writes `value` at `key`, attached to `lease` (0 for none).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Lease to attach the key to; 0 for a key that lives until deleted.
        lease: LeaseId,
    },
    /// Deletes `key` (nothing when absent).
    Delete {
        /// The key.
        key: String,
    },
}

/// A conditional write: when every comparison holds, every operation is applied
/// atomically at one new revision; otherwise nothing is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Writes applied when they do.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a condition.
    pub fn when(mut self, c: Compare) -> Txn {
        self.compares.push(c);
        self
    }

    /// Adds a put without a lease.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Txn {
        self.ops.push(Op::Put { key: key.into(), value: value.into(), lease: 0 });
        self
    }

    /// Adds a put attached to a lease.
    pub fn put_leased(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Txn {
        self.ops.push(Op::Put { key: key.into(), value: value.into(), lease });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every comparison held (and the operations were applied).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was written (created or modified).
    Put(KeyValue),
    /// The key was deleted (explicitly or because its lease ended).
    Delete {
        /// The deleted key.
        key: String,
        /// Revision of the deletion.
        mod_revision: Revision,
    },
}

impl WatchEvent {
    /// The key concerned.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Events of a watch, in revision order, grouped as the store delivered them. An `Err`
/// ends the watch (the store became unreachable, or the start revision was compacted):
/// the watcher re-reads what it needs and watches again.
pub type WatchReceiver = mpsc::Receiver<Result<Vec<WatchEvent>, StoreError>>;

/// Proof of holding an election: the candidate key the store created for us. Writes
/// guarded by [`LeaderKey::guard`] succeed only while this candidacy is the one that won
/// and has not ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    /// The election's name (a key prefix).
    pub name: String,
    /// The candidate key, `name/<lease in hex>` in etcd.
    pub key: String,
    /// The candidate key's create revision.
    pub create_revision: Revision,
    /// The lease the candidacy is attached to.
    pub lease: LeaseId,
}

impl LeaderKey {
    /// The comparison that fences a write on this leadership: the candidate key still
    /// exists with the same create revision (it is deleted when the lease ends, and a
    /// later candidacy has a later revision).
    pub fn guard(&self) -> Compare {
        Compare::CreateRevision(self.key.clone(), self.create_revision)
    }
}

/// A store operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or did not answer in time. For a write the outcome
    /// is unknown: it may or may not have been applied. Retriable.
    #[error("metadata store {endpoint} unavailable during {op}: {detail}")]
    Unavailable {
        /// The store's address.
        endpoint: String,
        /// The operation.
        op: &'static str,
        /// The client's message.
        detail: String,
    },
    /// The lease does not exist any more (it expired or was revoked).
    #[error("lease {lease:x} has expired or was revoked")]
    LeaseExpired {
        /// The lease.
        lease: LeaseId,
    },
    /// A watch's start revision is older than the store keeps history for.
    #[error("watch from revision {revision} is no longer possible (compacted up to {compacted})")]
    Compacted {
        /// The revision asked for.
        revision: Revision,
        /// The oldest revision the store still has.
        compacted: Revision,
    },
    /// The request was refused by the store (bad argument, too many operations, …).
    /// Not retriable.
    #[error("metadata store refused {op}: {detail}")]
    Refused {
        /// The operation.
        op: &'static str,
        /// The store's message.
        detail: String,
    },
    /// The embedded store could not persist a change to its file.
    #[error("metadata store file {path}: {detail}")]
    Storage {
        /// The file.
        path: String,
        /// The I/O error.
        detail: String,
    },
}

impl StoreError {
    /// Whether the same operation may succeed later (the store was unreachable).
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. } | StoreError::Compacted { .. })
    }

    /// Whether a write that failed with this error may nevertheless have been applied:
    /// the caller must read the state back before deciding anything.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The interface both metadata backends implement. Every method is one round trip to the
/// store (or none, embedded); none retries by itself, so the caller sees every failure and
/// decides.
#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug + 'static {
    /// A short description for logs and errors (`etcd 127.0.0.1:2379`, `embedded`).
    fn describe(&self) -> String;

    /// The key, if present.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, in key order, and the store revision they were
    /// read at (the revision to watch from, plus one).
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Every key starting with `prefix` that is ≥ `from_key`, in key order, and the
    /// revision they were read at (an ordered scan that resumes where a reader stopped).
    async fn list_from(&self, prefix: &str, from_key: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Applies a conditional write.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;

    /// Creates a lease that ends `ttl` after its last keep-alive (at least one second).
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease; returns the time it now has left. [`StoreError::LeaseExpired`] when
    /// it has already ended.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// Ends a lease now, deleting its keys. Revoking an ended lease is not an error.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Watches every key under `prefix`, delivering every change at or after
    /// `from_revision`.
    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchReceiver, StoreError>;

    /// Stands as a candidate in election `name` with `value`, attached to `lease`, and
    /// returns once this candidacy leads (the oldest live candidate). Cancel by dropping
    /// the future; the candidacy also ends with its lease.
    async fn campaign(&self, name: &str, value: &[u8], lease: LeaseId) -> Result<LeaderKey, StoreError>;

    /// The current leader of election `name` and its value, if any.
    async fn election_leader(&self, name: &str) -> Result<Option<(LeaderKey, Vec<u8>)>, StoreError>;

    /// Gives up a leadership (or candidacy): deletes the candidate key if it still is the
    /// same one.
    async fn resign(&self, leader: &LeaderKey) -> Result<(), StoreError>;
}

/// The end of the key range covering every key that starts with `prefix` (etcd's
/// `prefix + 1` rule).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
