//! A generic compare-and-swap key-value namespace in the metadata store, for state that
//! must be shared by every broker but is not the cluster's own (the schema registry in
//! cluster mode). Keys are relative to the namespace; values are opaque bytes.

use std::sync::Arc;

use super::types::Versioned;
use super::MetaError;
use crate::cluster::store::{Compare, MetaStore, Revision, Txn, WatchReceiver};

/// A condition on a key of the namespace, for [`KvNamespace::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCondition {
    /// The key is absent.
    Absent(String),
    /// The key was last written at this revision.
    Unchanged(String, Revision),
}

/// A write in the namespace, for [`KvNamespace::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    /// Set a key.
    Put(String, Vec<u8>),
    /// Delete a key.
    Delete(String),
}

/// One namespace: `PREFIX/kv/<namespace>/`.
#[derive(Debug, Clone)]
pub struct KvNamespace {
    store: Arc<dyn MetaStore>,
    prefix: String,
}

impl KvNamespace {
    pub(super) fn new(store: Arc<dyn MetaStore>, prefix: String) -> KvNamespace {
        KvNamespace { store, prefix }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A key's value and revision.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned<Vec<u8>>>, MetaError> {
        let kv = self.store.get(&self.full(key)).await?;
        Ok(kv.map(|kv| Versioned { value: kv.value, mod_revision: kv.mod_revision }))
    }

    /// Every key starting with `prefix` (relative), in key order, and the revision read at.
    pub async fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned<Vec<u8>>)>, Revision), MetaError> {
        let (kvs, rev) = self.store.list(&self.full(prefix)).await?;
        let items = kvs
            .into_iter()
            .map(|kv| {
                let key = kv.key[self.prefix.len()..].to_owned();
                (key, Versioned { value: kv.value, mod_revision: kv.mod_revision })
            })
            .collect();
        Ok((items, rev))
    }

    /// Keys starting with `prefix` (relative) that are ≥ `from_key` (relative), in key
    /// order: resume an ordered scan (e.g. an append-only log keyed by zero-padded
    /// sequence numbers) where the last one stopped.
    pub async fn list_from(
        &self,
        prefix: &str,
        from_key: &str,
    ) -> Result<(Vec<(String, Versioned<Vec<u8>>)>, Revision), MetaError> {
        let (kvs, rev) = self.store.list_from(&self.full(prefix), &self.full(from_key)).await?;
        let items = kvs
            .into_iter()
            .map(|kv| {
                let key = kv.key[self.prefix.len()..].to_owned();
                (key, Versioned { value: kv.value, mod_revision: kv.mod_revision })
            })
            .collect();
        Ok((items, rev))
    }

    /// Writes `value` only if the key is absent. Returns the new revision, or `None` when
    /// the key exists.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<Option<Revision>, MetaError> {
        self.commit(vec![KvCondition::Absent(key.into())], vec![KvWrite::Put(key.into(), value)]).await
    }

    /// Writes `value` only if the key was last written at `expected`. Returns the new
    /// revision, or `None` when it changed meanwhile (or is absent).
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: Vec<u8>,
    ) -> Result<Option<Revision>, MetaError> {
        self.commit(vec![KvCondition::Unchanged(key.into(), expected)], vec![KvWrite::Put(key.into(), value)]).await
    }

    /// Deletes the key only if it was last written at `expected`. `None` when it changed.
    pub async fn delete_if_unchanged(&self, key: &str, expected: Revision) -> Result<Option<Revision>, MetaError> {
        self.commit(vec![KvCondition::Unchanged(key.into(), expected)], vec![KvWrite::Delete(key.into())]).await
    }

    /// Applies every write atomically when every condition holds (a multi-key
    /// compare-and-swap, e.g. "new id counter + new schema + new subject version"). Returns
    /// the new revision, or `None` when a condition failed and nothing was written.
    pub async fn commit(
        &self,
        conditions: Vec<KvCondition>,
        writes: Vec<KvWrite>,
    ) -> Result<Option<Revision>, MetaError> {
        let mut txn = Txn::new();
        for c in conditions {
            txn = txn.when(match c {
                KvCondition::Absent(k) => Compare::Absent(self.full(&k)),
                KvCondition::Unchanged(k, r) => Compare::ModRevision(self.full(&k), r),
            });
        }
        for w in writes {
            txn = match w {
                KvWrite::Put(k, v) => txn.put(self.full(&k), v),
                KvWrite::Delete(k) => txn.delete(self.full(&k)),
            };
        }
        let outcome = self.store.txn(txn).await?;
        Ok(outcome.succeeded.then_some(outcome.revision))
    }

    /// Watches the namespace from `from_revision` (keys in the events are full store keys;
    /// strip [`KvNamespace::prefix`]).
    pub async fn watch(&self, from_revision: Revision) -> Result<WatchReceiver, MetaError> {
        Ok(self.store.watch(&self.prefix, from_revision).await?)
    }

    /// The namespace's full key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}
